//! `shipit logs [-f] [-n N] [--since TIME]`: the service's journal on every targeted host,
//! each line prefixed with its host. Without `-f`, every host's lines merged in time
//! order (UTC ISO timestamps); with `-f`, the last lines, then new ones as they come,
//! until Ctrl-C. Behind the proxy: every slot's instance.

use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::config::ServiceManager;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::settings::Settings;
use crate::targets::Pick;

use super::exec::everywhere;

pub struct Logs<'a> {
    pub follow: bool,
    pub lines: usize,
    pub since: Option<&'a str>,
    pub hosts: Pick,
}

pub fn run(settings: &Settings, l: Logs) -> Result<Exit> {
    let config = settings.load_config()?;
    if config.roles.is_empty() && config.service.manager == ServiceManager::None {
        anyhow::bail!("`service.manager: none`: shipit does not know where the app logs");
    }
    let (lines, since, follow) = (l.lines, l.since.map(str::to_owned), l.follow);
    // Each host's plan (its role's, with roles) names its service.
    let script = move |plan: &Plan| -> Result<String> {
        let unit = match &plan.proxy {
            Some(_) => format!("{}@*", plan.service),
            None => plan.service.clone(),
        };
        let script = crate::remote::unit::logs_script(
            plan.manager,
            &unit,
            plan.sudo,
            lines,
            since.as_deref(),
            follow,
        )?;
        Ok(script.unwrap_or_else(|| "echo '(service.manager: none: no journal)'\n".into()))
    };
    let printer = settings.printer;
    if l.follow {
        let sink = move |host: &str, line: &str| printer.data(&format!("{host}: {line}"));
        return everywhere(settings, &config, l.hosts, script, Arc::new(sink));
    }
    let kept: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let keep = kept.clone();
    let sink = move |host: &str, line: &str| {
        keep.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((host.to_owned(), line.to_owned()));
    };
    let exit = everywhere(settings, &config, l.hosts, script, Arc::new(sink))?;
    let mut lines = kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // `-- No entries --` and the like carry no time: they sort first, per host.
    lines.sort_by(|a, b| stamp(&a.1).cmp(stamp(&b.1)));
    for (host, line) in lines {
        printer.data(&format!("{host}: {line}"));
    }
    Ok(exit)
}

/// The ISO timestamp a `short-iso` journal line starts with ("" for other lines).
fn stamp(line: &str) -> &str {
    let first = line.split(' ').next().unwrap_or("");
    if first.len() >= 19 && first.as_bytes()[4] == b'-' && first.as_bytes()[10] == b'T' {
        first
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_sort_by_their_timestamp() {
        let mut l = [
            "2026-12-05T07:00:02+00:00 host1 hello[1]: b",
            "-- No entries --",
            "2026-12-05T07:00:01+00:00 host2 hello[1]: a",
        ];
        l.sort_by(|a, b| super::stamp(a).cmp(super::stamp(b)));
        assert_eq!(l[0], "-- No entries --");
        assert!(l[1].ends_with(": a") && l[2].ends_with(": b"));
    }
}
