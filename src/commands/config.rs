//! `shipit config`: validate and print the resolved configuration.

use anyhow::Result;

use crate::exit::Exit;
use crate::settings::Settings;

pub fn run(settings: &Settings, json: bool) -> Result<Exit> {
    let config = settings.load_config()?;
    let text = if json {
        serde_json::to_string_pretty(&config)?
    } else {
        let env = config.environment.as_deref().unwrap_or("(none)");
        let body = serde_saphyr::to_string(&config)?;
        format!(
            "# {} (environment: {env}), resolved\n{}",
            config.file.display(),
            body.trim_end()
        )
    };
    settings.printer.data(&text);
    Ok(Exit::Ok)
}
