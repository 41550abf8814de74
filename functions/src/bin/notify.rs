//! The `notify` function. Job status events: post them to the stack's webhook.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::control::webhooks::UreqSender;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    functions::init_tracing();
    let env = functions::Env::from_env()?;
    let hook = functions::webhook_from_env()?;
    let ctx = functions::context(&env, functions::Function::Notify).await?;
    let (ctx, hook, sender) = (&ctx, hook.as_ref(), &UreqSender::new());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        functions::on_job_status(ctx, event.payload, hook, sender)
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
