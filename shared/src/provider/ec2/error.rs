//! EC2 (and SSM) error codes → [`ProviderError`], sorted the way recovery needs.

use std::error::Error;
use std::fmt;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::provider::ProviderError;

/// An API error as the service named it, kept as the source of [`ProviderError::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl Error for ApiError {}

/// What an EC2 or SSM error code means for the launch walk. The message of a typed variant is
/// `<code>: <message>`.
///
/// - Capacity (try the next candidate): `InsufficientInstanceCapacity`,
///   `InsufficientHostCapacity`, `InsufficientCapacity`, `InsufficientReservedInstanceCapacity`,
///   `InsufficientFreeAddressesInSubnet`, `SpotMaxPriceTooLow`.
/// - Unavailable (this region or zone cannot host it; try the next candidate): `Unsupported`
///   (e.g. the type is not offered in that zone), `VPCIdNotSpecified` (no default VPC),
///   `InvalidSubnet*`, `InvalidVpcID.*`, `InvalidGroup.NotFound`, `InvalidAMIID.NotFound` and
///   `InvalidAMIID.Unavailable` (AMIs are regional), `ParameterNotFound` (SSM: no such AMI
///   parameter in the region).
/// - Quota (try the next candidate): `MaxSpotInstanceCountExceeded`, `InstanceLimitExceeded`,
///   `VcpuLimitExceeded` and every other `*LimitExceeded` but `RequestLimitExceeded`.
/// - Throttled (back off): `RequestLimitExceeded`, `Throttling`, `ThrottlingException`,
///   `TooManyRequestsException`.
/// - Auth (no candidate on this cloud will work): `AuthFailure`, `UnauthorizedOperation`,
///   `OptInRequired`, `Blocked`, `InvalidClientTokenId`, `SignatureDoesNotMatch`,
///   `ExpiredToken`, `AccessDenied`, `AccessDeniedException`, `UnrecognizedClientException`.
/// - Invalid (fix the task or the settings): other `InvalidAMIID.*` (a malformed id),
///   `InvalidParameter*`, `InvalidInstanceType`, `InvalidBlockDeviceMapping`,
///   `InvalidUserData.*`, `IdempotentParameterMismatch` (the cluster name was used with other
///   arguments).
/// - Anything else is [`ProviderError::Other`] (retry later).
pub(crate) fn classify(code: &str, message: &str) -> ProviderError {
    let api = ApiError {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    let message = api.to_string();
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientFreeAddressesInSubnet"
        | "SpotMaxPriceTooLow" => ProviderError::NoCapacity { message },
        "Unsupported"
        | "VPCIdNotSpecified"
        | "InvalidGroup.NotFound"
        | "InvalidAMIID.NotFound"
        | "InvalidAMIID.Unavailable"
        | "ParameterNotFound" => ProviderError::Unavailable { message },
        c if c.starts_with("InvalidSubnet") || c.starts_with("InvalidVpcID.") => {
            ProviderError::Unavailable { message }
        }
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequestsException" => ProviderError::Throttled { message },
        "MaxSpotInstanceCountExceeded" | "InstanceLimitExceeded" | "VcpuLimitExceeded" => {
            ProviderError::Quota { message }
        }
        c if c.ends_with("LimitExceeded") => ProviderError::Quota { message },
        "AuthFailure"
        | "UnauthorizedOperation"
        | "OptInRequired"
        | "Blocked"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "AccessDenied"
        | "AccessDeniedException"
        | "UnrecognizedClientException" => ProviderError::Auth { message },
        "InvalidInstanceType" | "InvalidBlockDeviceMapping" | "IdempotentParameterMismatch" => {
            ProviderError::Invalid { message }
        }
        c if c.starts_with("InvalidAMIID.")
            || c.starts_with("InvalidParameter")
            || c.starts_with("InvalidUserData.") =>
        {
            ProviderError::Invalid { message }
        }
        _ => ProviderError::Other {
            context: message,
            source: Box::new(api),
        },
    }
}

/// The error code of a failed SDK call, if the service answered with one.
pub(crate) fn code_of<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    err.code()
}

/// A failed SDK call as a [`ProviderError`]; `what` says which call and where, e.g.
/// "EC2 `RunInstances` in us-east-1b".
pub(crate) fn api_error<E, R>(what: &str, err: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let Some(code) = err.code() else {
        // No answer from the service (connection, timeout, construction): retry later.
        return ProviderError::Other {
            context: format!("{what}: {}", DisplayErrorContext(&err)),
            source: Box::new(err),
        };
    };
    classify(code, err.message().unwrap_or_default()).within(what, Some(Box::new(err)))
}
