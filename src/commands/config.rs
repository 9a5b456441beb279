//! `shipit config`: validate and print the resolved configuration.

use anyhow::Result;

use crate::exit::Exit;
use crate::settings::Settings;

pub fn run(settings: &Settings, json: bool) -> Result<Exit> {
    let config = settings.load_config()?;
    if json {
        settings.printer.document(&config);
        return Ok(Exit::Ok);
    }
    let env = config.environment.as_deref().unwrap_or("(none)");
    let body = serde_saphyr::to_string(&config)?;
    settings.printer.data(&format!(
        "# {} (environment: {env}), resolved\n{}",
        config.file.display(),
        body.trim_end()
    ));
    Ok(Exit::Ok)
}
