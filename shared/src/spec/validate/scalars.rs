//! The scalar fields of `resources`: accelerators, CPU and memory quantities, disk sizes,
//! choices from a fixed list, ports, and how a bad value is shown.

use serde_yaml::Value;

use crate::spec::resources::{Accelerator, Accelerators, PortRange, Quantity};
use crate::suggest;

/// GPU and accelerator names SkyPilot knows, in their canonical spelling. A name outside this
/// list is a typo; a name inside it that no catalog offers is a "no fit" for the optimizer.
pub const KNOWN_ACCELERATORS: &[&str] = &[
    "A10",
    "A10G",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "A40",
    "A6000",
    "B100",
    "B200",
    "GB200",
    "GH200",
    "H100",
    "H100-MEGA",
    "H200",
    "K80",
    "L4",
    "L40",
    "L40S",
    "M60",
    "P100",
    "P4",
    "P40",
    "RTX3090",
    "RTX4090",
    "RTX6000",
    "RTXPRO6000",
    "T4",
    "T4g",
    "V100",
    "V100-32GB",
    "MI300X",
    "MI325X",
    "Gaudi",
    "Inferentia",
    "Inferentia2",
    "Trainium",
    "Trainium2",
];

/// Every accepted form: `V100`, `V100:2`, `{A100: 8}`, `{'A100:1', 'T4:1'}`, `[A100:1, T4:1]`.
pub(super) fn accelerators(value: &Value) -> std::result::Result<Accelerators, String> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            if s.contains(',') {
                let options = s
                    .split(',')
                    .map(|p| accelerator(p.trim(), None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                return Ok(Accelerators::AnyOf(options));
            }
            accelerator(s, None).map(Accelerators::One)
        }
        Value::Mapping(map) => {
            let mut options = Vec::new();
            for (key, count) in map {
                let name =
                    scalar_text(key).ok_or("each key must be an accelerator name such as A100")?;
                options.push(accelerator(&name, Some(count))?);
            }
            match options.len() {
                0 => Err("is empty: name an accelerator such as A100:1".into()),
                1 => Ok(Accelerators::One(options.remove(0))),
                _ => Ok(Accelerators::AnyOf(options)),
            }
        }
        Value::Sequence(items) => {
            let mut options = Vec::new();
            for item in items {
                match item {
                    Value::Mapping(_) => match accelerators(item)? {
                        Accelerators::One(a) => options.push(a),
                        _ => return Err("each list item names one accelerator, e.g. A100:1".into()),
                    },
                    other => {
                        let name = scalar_text(other)
                            .ok_or("each list item must be NAME or NAME:COUNT")?;
                        options.push(accelerator(&name, None)?);
                    }
                }
            }
            match options.len() {
                0 => Err("is empty: name an accelerator such as A100:1".into()),
                1 => Ok(Accelerators::One(options.remove(0))),
                _ => Ok(Accelerators::Ordered(options)),
            }
        }
        other => Err(format!(
            "{} is not an accelerator: write NAME or NAME:COUNT, e.g. V100:2",
            show(other)
        )),
    }
}

pub(super) fn accelerator(
    text: &str,
    count: Option<&Value>,
) -> std::result::Result<Accelerator, String> {
    let (name, count_text) = match text.split_once(':') {
        Some((n, c)) => (n.trim(), Some(c.trim().to_owned())),
        None => (text.trim(), None),
    };
    let count_text = match (count_text, count) {
        (Some(_), Some(v)) if !v.is_null() => {
            return Err(format!("'{text}' gives its count twice"));
        }
        (Some(c), _) => c,
        (None, Some(v)) if !v.is_null() => {
            scalar_text(v).ok_or_else(|| format!("the count of {name} must be a number"))?
        }
        (None, _) => "1".to_owned(),
    };
    let count: f64 = count_text
        .parse()
        .ok()
        .filter(|c: &f64| *c > 0.0 && c.is_finite())
        .ok_or_else(|| format!("'{count_text}' is not a valid count for {name}: use a positive number, e.g. {name}:1"))?;
    if name.to_ascii_lowercase().starts_with("tpu-") {
        return Err(format!(
            "TPUs ('{name}') are not supported by Stratus, which launches Compute Engine VMs, not Cloud TPU VMs; use a GPU such as A100 or H100"
        ));
    }
    let canonical = KNOWN_ACCELERATORS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            format!(
                "unknown accelerator '{name}'{}; known: {}",
                suggest::did_you_mean(name, KNOWN_ACCELERATORS.iter().copied()),
                "T4, L4, A10G, L40S, V100, A100, A100-80GB, H100, H200, ..."
            )
        })?;
    Ok(Accelerator {
        name: (*canonical).to_owned(),
        count,
    })
}

/// `8`, `8+`; memory also `32GB`, `1TB+`, `4x` (times vCPUs).
pub(super) fn quantity(text: &str, memory: bool) -> std::result::Result<Quantity, String> {
    let original = text;
    let mut text = text.trim();
    let at_least = text.ends_with('+');
    text = text.trim_end_matches('+').trim();
    let mut per_cpu = false;
    let mut scale = 1.0;
    if memory {
        if let Some(t) = text.strip_suffix(['x', 'X']) {
            per_cpu = true;
            text = t;
        } else {
            let lower = text.to_ascii_lowercase();
            for (suffix, factor) in [
                ("tib", 1024.0),
                ("tb", 1024.0),
                ("gib", 1.0),
                ("gb", 1.0),
                ("mib", 1.0 / 1024.0),
                ("mb", 1.0 / 1024.0),
            ] {
                if lower.ends_with(suffix) {
                    text = text[..text.len() - suffix.len()].trim();
                    scale = factor;
                    break;
                }
            }
        }
    }
    let value: f64 = text
        .parse()
        .ok()
        .filter(|v: &f64| *v > 0.0 && v.is_finite())
        .ok_or_else(|| {
            if memory {
                format!("'{original}' is not a memory size: write GB as N (exactly) or N+ (at least), e.g. 32+")
            } else {
                format!("'{original}' is not a vCPU count: write N (exactly) or N+ (at least), e.g. 8+")
            }
        })?;
    Ok(Quantity {
        value: value * scale,
        at_least,
        per_cpu,
    })
}

pub(super) fn disk_size(text: &str) -> std::result::Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, factor) = [("tb", 1024.0), ("t", 1024.0), ("gb", 1.0), ("g", 1.0)]
        .iter()
        .find_map(|(suffix, factor)| {
            lower
                .strip_suffix(suffix)
                .map(|n| (n.trim().to_owned(), *factor))
        })
        .unwrap_or((lower.clone(), 1.0));
    number
        .parse::<f64>()
        .ok()
        .filter(|v| *v >= 1.0)
        .map(|v| (v * factor) as u32)
        .ok_or_else(|| format!("'{text}' is not a disk size: write GB as a whole number, e.g. 256"))
}

pub(super) fn choice<T: Copy>(text: &str, options: &[(&str, T)]) -> std::result::Result<T, String> {
    let lower = text.to_ascii_lowercase();
    options
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown value '{text}'{}: use one of {}",
                suggest::did_you_mean(text, names.iter().copied()),
                names.join(", ")
            )
        })
}

pub(super) fn ports(value: &Value) -> std::result::Result<Vec<PortRange>, String> {
    let items: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|item| {
            let text =
                scalar_text(item).ok_or("each port must be a number or a range like 8080-8090")?;
            let parse = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        format!("'{text}' is not a port: use 1-65535 or a range like 8080-8090")
                    })
            };
            let (first, last) = if let Some((a, b)) = text.split_once('-') {
                (parse(a)?, parse(b)?)
            } else {
                let p = parse(&text)?;
                (p, p)
            };
            if first > last {
                return Err(format!(
                    "'{text}': the range's first port is above its last"
                ));
            }
            Ok(PortRange { first, last })
        })
        .collect()
}

pub(super) fn positive_int(value: &Value) -> Option<u32> {
    non_negative_int(value).filter(|n| *n > 0)
}

pub(super) fn non_negative_int(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn show(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        other => format!("'{}'", scalar_text(other).unwrap_or_default()),
    }
}
