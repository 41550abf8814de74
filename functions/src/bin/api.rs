//! The `api` function: the same axum router as the local control plane, behind API Gateway.
//! User routes carry the caller's IAM identity (verified by API Gateway); agent routes carry
//! the job's token.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    functions::init_tracing();
    let env = functions::Env::from_env()?;
    let ctx = functions::context(&env, functions::Function::Api).await?;
    let auth = Arc::new(functions::IamAuth {
        admins: env.admins.clone(),
    });
    let app =
        shared::api::router(ctx, auth).layer(axum::middleware::from_fn(functions::caller_identity));
    lambda_http::run(app).await
}
