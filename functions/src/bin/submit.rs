//! The `submit` function. Direct invocations with {owner, request}: validate, plan, store, start.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    functions::init_tracing();
    let env = functions::Env::from_env()?;
    let ctx = functions::context(&env, functions::Function::Submit).await?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        functions::on_submit(ctx, event.payload)
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
