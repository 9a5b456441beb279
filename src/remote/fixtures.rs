//! What the snapshot tests of the builders feed them: fixed values, so that every
//! snapshot is the whole script a host receives, with nothing filtered out.

use std::collections::BTreeMap;

use super::release::{Found, ReleaseInfo, State};
use crate::redact::Text;

pub(crate) const ID: &str = "20231114T221320Z-3f2a9c1d";
pub(crate) const OLDER: &str = "20231101T080000Z-0badc0de";
pub(crate) const SHA: &str = "3f2a9c1d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
pub(crate) const CONFIG_SHA: &str =
    "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
pub(crate) const TOKEN: &str = "00112233445566778899aabbccddeeff";
pub(crate) const UNIT: &str =
    "[Unit]\nDescription=hello\n\n[Service]\nExecStart=/srv/hello/current/bin/app\n";

/// release.json of release `ID` in `state`.
pub(crate) fn json(state: State) -> String {
    serde_json::to_string(&ReleaseInfo {
        id: ID.into(),
        app: "hello".into(),
        version: "v1.2.0".into(),
        commit: Some("9f8e7d6".into()),
        artifact_sha256: SHA.into(),
        state,
        created_at: 1_700_000_000,
        deployed_by: "ann@laptop".into(),
        config_sha256: Some(CONFIG_SHA.into()),
    })
    .unwrap()
}

/// A release as a survey finds it; `None`: without release.json.
pub(crate) fn found(id: &str, state: Option<State>) -> Found {
    Found {
        id: id.into(),
        info: state.map(|state| ReleaseInfo {
            id: id.into(),
            app: "a".into(),
            version: "v".into(),
            commit: None,
            artifact_sha256: format!("sha-{id}"),
            state,
            created_at: 0,
            deployed_by: "x".into(),
            config_sha256: None,
        }),
    }
}

/// An environment with a value that needs double quotes and a secret.
pub(crate) fn env() -> BTreeMap<String, Text> {
    let mut env = BTreeMap::new();
    env.insert("PORT".to_owned(), Text::plain("8080"));
    env.insert("GREETING".to_owned(), Text::plain("it's \"$HOME\""));
    env.insert("DB_PASSWORD".to_owned(), Text::secret("hunter2-snapshot"));
    env
}

/// Two hooks, the second a secret.
pub(crate) fn hooks() -> Vec<Text> {
    vec![
        Text::plain("bin/migrate --yes"),
        Text::secret("curl -fsS -H 'Token: t0k3n-snapshot' https://hooks.example/deploy"),
    ]
}
