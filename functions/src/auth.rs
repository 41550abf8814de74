//! Who calls the `api` and `submit` functions: the IAM principal API Gateway verified.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt as _;
use lambda_http::request::RequestContext;
use shared::api::{Authenticator, User};

/// The header the API Gateway identity is passed to the router in. [`caller_identity`]
/// overwrites whatever a client sent in it.
pub const CALLER_HEADER: &str = "x-stratus-caller-arn";

/// Middleware for the `api` function: takes the caller's IAM ARN from the API Gateway request
/// context (verified by API Gateway's IAM auth) and passes it on in [`CALLER_HEADER`].
pub async fn caller_identity(mut request: Request, next: Next) -> Response {
    request.headers_mut().remove(CALLER_HEADER);
    let arn = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    };
    if let Some(value) = arn.and_then(|a| HeaderValue::from_str(&a).ok()) {
        request.headers_mut().insert(CALLER_HEADER, value);
    }
    next.run(request).await
}

/// Users are IAM principals: the caller ARN API Gateway verified. Admins see everyone's jobs.
pub struct IamAuth {
    pub admins: Vec<String>,
}

impl Authenticator for IamAuth {
    fn user(&self, headers: &axum::http::HeaderMap) -> Option<User> {
        let arn = headers.get(CALLER_HEADER)?.to_str().ok()?.to_owned();
        let admin = self.admins.iter().any(|a| is_principal(a, &arn));
        Some(User { name: arn, admin })
    }
}

/// Whether `caller` is `principal`, or a session of the role `principal`
/// (`arn:aws:iam::<acct>:role/<name>` → `arn:aws:sts::<acct>:assumed-role/<name>/<session>`).
pub fn is_principal(principal: &str, caller: &str) -> bool {
    if principal == caller {
        return true;
    }
    let Some((account, role)) = principal
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.split_once(":role/"))
    else {
        return false;
    };
    let role = role.rsplit('/').next().unwrap_or(role);
    caller
        .strip_prefix(&format!("arn:aws:sts::{account}:assumed-role/{role}/"))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_are_principals_or_sessions_of_an_admin_role() {
        let role = "arn:aws:iam::123456789012:role/StratusAdmin";
        assert!(is_principal(role, role));
        assert!(is_principal(
            role,
            "arn:aws:sts::123456789012:assumed-role/StratusAdmin/alice"
        ));
        assert!(!is_principal(
            role,
            "arn:aws:sts::999999999999:assumed-role/StratusAdmin/alice"
        ));
        assert!(!is_principal(
            role,
            "arn:aws:sts::123456789012:assumed-role/Other/alice"
        ));
        assert!(!is_principal(role, "arn:aws:iam::123456789012:user/alice"));
    }

    #[test]
    fn the_caller_header_decides_the_user() {
        let auth = IamAuth {
            admins: vec!["arn:aws:iam::1:role/Admin".into()],
        };
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(auth.user(&headers), None, "no verified caller, no user");
        headers.insert(
            CALLER_HEADER,
            "arn:aws:sts::1:assumed-role/Admin/bob".parse().unwrap(),
        );
        assert!(auth.user(&headers).unwrap().admin);
        headers.insert(CALLER_HEADER, "arn:aws:iam::1:user/carol".parse().unwrap());
        let user = auth.user(&headers).unwrap();
        assert!(!user.admin);
        assert_eq!(user.name, "arn:aws:iam::1:user/carol");
    }
}
