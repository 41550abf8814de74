//! The `poll` function. The schedule and EC2 events: sweep active jobs against the clouds.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    functions::init_tracing();
    let env = functions::Env::from_env()?;
    let ctx = functions::context(&env, functions::Function::Poll).await?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        functions::on_poll(ctx, event.payload)
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
