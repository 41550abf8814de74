//! The `api` function: the same axum router as the local control plane, behind API Gateway.
//! User routes carry the caller's IAM identity (verified by API Gateway); agent routes carry
//! the job's token.
//!
//! The same executable is the node agent: started as `stratus-agent` (the name boot scripts
//! give it on a machine) it runs the agent instead. So `sam build` builds the agent with the
//! functions (cargo-lambda links it against an old glibc: it runs on the default images of
//! both clouds), and the API serves machines its own file (`GET /agent/v1/jobs/{id}/agent`).

use std::sync::Arc;

fn main() -> Result<std::process::ExitCode, lambda_http::Error> {
    if let Some(code) = agent::exec_if_trampoline() {
        return Ok(code);
    }
    let named = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if named.as_deref() == Some("stratus-agent") {
        return Ok(agent::main_from_env("stratus-agent"));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve() -> Result<(), lambda_http::Error> {
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
