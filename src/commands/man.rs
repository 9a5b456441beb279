//! `shipit man`: the man pages, from the same clap definitions `--help` shows. `shipit.1`
//! lists the commands; each has its own `shipit-<command>.1`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::roff::{Roff, roman};

use crate::cli::Cli;
use crate::exit::Exit;
use crate::settings::Settings;

/// One man page: its file name (`shipit-deploy.1`) and its roff text.
pub struct Page {
    pub file: String,
    pub roff: String,
}

/// `shipit.1` first, then `shipit-<command>.1` for every command, in `--help`'s order.
/// The main page's SEE ALSO names every command's page; theirs name `shipit(1)`.
pub fn pages() -> Result<Vec<Page>> {
    // `shipit help` is clap's, and has no page.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let names: Vec<String> = subs
        .iter()
        .map(|s| format!("{}-{}", cmd.get_name(), s.get_name()))
        .collect();
    let main = cmd.get_name().to_owned();
    let mut pages = vec![page(cmd, &names)?];
    for sub in subs {
        pages.push(page(sub, std::slice::from_ref(&main))?);
    }
    Ok(pages)
}

fn page(cmd: clap::Command, see_also: &[String]) -> Result<Page> {
    let man = clap_mangen::Man::new(cmd).source(format!("shipit {}", crate::cli::VERSION));
    let mut out = Vec::new();
    man.render(&mut out)?;
    let refs: Vec<String> = see_also.iter().map(|n| format!("{n}(1)")).collect();
    let mut roff = String::from_utf8(out)?;
    roff.push_str(
        &Roff::new()
            .control("SH", ["SEE ALSO"])
            .text([roman(refs.join(", "))])
            .to_roff(),
    );
    Ok(Page {
        file: man.get_filename(),
        roff,
    })
}

pub fn run(settings: &Settings, dir: Option<&Path>) -> Result<Exit> {
    let pages = pages()?;
    let Some(dir) = dir else {
        settings.printer.data(pages[0].roff.trim_end());
        return Ok(Exit::Ok);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for page in &pages {
        let path = dir.join(&page.file);
        std::fs::write(&path, &page.roff).with_context(|| format!("writing {}", path.display()))?;
        settings.printer.data(&path.display().to_string());
    }
    Ok(Exit::Ok)
}
