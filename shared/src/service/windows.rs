//! The native Windows service (the `windows-service` crate), compiled on
//! Windows only. Kept small: paths, arguments and the stop bridge are in
//! `mod.rs` and tested on every platform; what is left is the service
//! manager's calls. The documented fallback is `sc.exe` (docs/agent.md).

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{Program, ServiceCommand, Shutdown};

type Body = Box<dyn FnOnce(Shutdown) -> anyhow::Result<()> + Send>;

/// What `service_main` runs: set by [`run`] before the dispatcher starts,
/// taken once by `service_main` (the dispatcher cannot carry a closure).
static LAUNCH: Mutex<Option<(Program, Body)>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Connects to the service manager and runs `body` as the service; returns
/// when the service has stopped.
pub(super) fn run(program: &Program, body: Body) -> anyhow::Result<()> {
    *LAUNCH.lock().expect("not poisoned") = Some((*program, body));
    service_dispatcher::start(program.name, ffi_service_main).map_err(|e| {
        anyhow::anyhow!("cannot connect to the Windows service manager ({e}); without the service manager use `run --config …`")
    })
}

/// Called by the service manager on its own thread.
fn service_main(_arguments: Vec<OsString>) {
    let Some((program, body)) = LAUNCH.lock().expect("not poisoned").take() else {
        return;
    };
    let (stop, stopped) = super::stop_channel();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            stop.stop();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(status) = service_control_handler::register(program.name, handler) else {
        return;
    };
    let report = move |state, accept, exit_code, wait_hint| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code,
            checkpoint: 0,
            wait_hint,
            process_id: None,
        });
    };
    report(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        ServiceExitCode::NO_ERROR,
        Duration::ZERO,
    );
    // StopPending as soon as the stop is asked for: the program then drains
    // and flushes (at most 30 s).
    let shutdown: Shutdown = Box::pin(async move {
        stopped.wait().await;
        report(
            ServiceState::StopPending,
            ServiceControlAccept::empty(),
            ServiceExitCode::NO_ERROR,
            Duration::from_secs(30),
        );
    });
    let exit_code = match body(shutdown) {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the service stopped with an error");
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    report(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
        Duration::ZERO,
    );
}

/// `service install|uninstall|start|stop|status` through the service manager.
pub(super) fn execute(program: &Program, command: ServiceCommand) -> anyhow::Result<()> {
    let access = match command {
        ServiceCommand::Install(_) => {
            ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE
        }
        _ => ServiceManagerAccess::CONNECT,
    };
    let manager = ServiceManager::local_computer(None::<&str>, access).map_err(|e| {
        anyhow::anyhow!("cannot open the service manager ({e}): run as Administrator")
    })?;
    match command {
        ServiceCommand::Install(args) => {
            let config = super::absolute(
                &args
                    .config
                    .unwrap_or_else(|| super::default_config(program)),
            )?;
            let executable_path = match args.exe {
                Some(exe) => super::absolute(&exe)?,
                None => std::env::current_exe()?,
            };
            let info = ServiceInfo {
                name: program.name.into(),
                display_name: program.name.into(),
                service_type: ServiceType::OWN_PROCESS,
                start_type: ServiceStartType::AutoStart,
                error_control: ServiceErrorControl::Normal,
                executable_path,
                launch_arguments: super::windows_launch_arguments(&config),
                dependencies: vec![],
                account_name: None, // LocalSystem
                account_password: None,
            };
            if args.dry_run {
                println!("would create the service {:?}", info);
                return Ok(());
            }
            anyhow::ensure!(
                config.is_file(),
                "{} does not exist: write the config first, check it with `{} check-config --config {}`, then install",
                config.display(),
                program.name,
                config.display()
            );
            let service = manager
                .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the service {} ({e}); if it is already installed: `{} service uninstall` first",
                        program.name,
                        program.name
                    )
                })?;
            service.set_description(program.description)?;
            service.start::<&str>(&[])?;
            println!(
                "{} installed and started; logs in {}",
                program.name,
                super::default_log_dir(true).unwrap_or_default().display()
            );
        }
        ServiceCommand::Uninstall { dry_run } => {
            if dry_run {
                println!("would stop and delete the service {}", program.name);
                return Ok(());
            }
            let service = manager.open_service(
                program.name,
                ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
            )?;
            if service.query_status()?.current_state != ServiceState::Stopped {
                let _ = service.stop();
            }
            service.delete()?;
            println!(
                "{} removed (once stopped); config, data and logs stay",
                program.name
            );
        }
        ServiceCommand::Start => {
            manager
                .open_service(program.name, ServiceAccess::START)?
                .start::<&str>(&[])?;
        }
        ServiceCommand::Stop => {
            manager
                .open_service(program.name, ServiceAccess::STOP)?
                .stop()?;
        }
        ServiceCommand::Status => {
            let status = manager
                .open_service(program.name, ServiceAccess::QUERY_STATUS)?
                .query_status()?;
            println!("{}: {:?}", program.name, status.current_state);
            anyhow::ensure!(
                status.current_state == ServiceState::Running,
                "{} is not running",
                program.name
            );
        }
    }
    Ok(())
}
