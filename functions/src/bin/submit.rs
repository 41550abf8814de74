//! The `submit` function: API Gateway routes `POST /api/v1/jobs` here (IAM auth). It
//! validates, plans and stores the job and publishes `Submitted`; the launch is `recover`'s.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    functions::init_tracing();
    let env = functions::Env::from_env()?;
    let ctx = functions::context(&env, functions::Function::Submit).await?;
    let auth = Arc::new(functions::IamAuth {
        admins: env.admins.clone(),
    });
    let app = shared::api::submit_router(ctx, auth)
        .layer(axum::middleware::from_fn(functions::caller_identity));
    lambda_http::run(app).await
}
