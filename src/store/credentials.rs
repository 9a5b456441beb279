//! Where the deployer's S3 credentials come from, in the order the AWS tools use: the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the
//! shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`;
//! profile `AWS_PROFILE`, else `default`), then the instance metadata service (IMDSv2)
//! when the deployer runs on a cloud instance. They stay in this process: never written
//! to a host, never printed.

use std::path::PathBuf;
use std::time::Duration;

use super::sigv4::Credentials;

/// Looks the credentials up; `Err` says where it looked.
pub async fn find(lookup: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<Credentials, String> {
    if let (Some(access_key), Some(secret_key)) = (
        lookup("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty()),
        lookup("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty()),
    ) {
        return Ok(Credentials {
            access_key,
            secret_key,
            session_token: lookup("AWS_SESSION_TOKEN").filter(|v| !v.is_empty()),
        });
    }
    let profile = lookup("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let file = lookup("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| lookup("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    if let Some(path) = &file
        && let Ok(text) = std::fs::read_to_string(path)
    {
        if let Some(c) = from_profile(&text, &profile) {
            return Ok(c);
        }
        if lookup("AWS_PROFILE").is_some() {
            return Err(format!(
                "profile `{profile}` (AWS_PROFILE) has no aws_access_key_id and \
                 aws_secret_access_key in {}",
                path.display()
            ));
        }
    }
    let imds_off = lookup("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v == "true");
    if !imds_off && let Ok(c) = from_instance_metadata().await {
        return Ok(c);
    }
    Err(format!(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in {} \
         (AWS_PROFILE), or run on an instance with a role",
        file.map_or("~/.aws/credentials".into(), |p| p.display().to_string())
    ))
}

/// The keys of `[profile]` in a shared credentials file (INI).
pub fn from_profile(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_section = false;
    let (mut access, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_section = name == profile || name.strip_prefix("profile ") == Some(profile);
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_owned());
            match k.trim() {
                "aws_access_key_id" => access = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key: access?,
        secret_key: secret?,
        session_token: token,
    })
}

/// A role's temporary credentials from IMDSv2 (a token first, then the role's keys).
async fn from_instance_metadata() -> Result<Credentials, String> {
    let base = "http://169.254.169.254/latest";
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let token = client
        .put(format!("{base}/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "300")
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let get = |path: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let r = client
                .get(path)
                .header("x-aws-ec2-metadata-token", token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("instance metadata: {}", r.status()));
            }
            r.text().await.map_err(|e| e.to_string())
        }
    };
    let roles = get(format!("{base}/meta-data/iam/security-credentials/")).await?;
    let role = roles
        .lines()
        .next()
        .ok_or("no instance role")?
        .trim()
        .to_owned();
    let json = get(format!("{base}/meta-data/iam/security-credentials/{role}")).await?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    Ok(Credentials {
        access_key: s("AccessKeyId").ok_or("no AccessKeyId")?,
        secret_key: s("SecretAccessKey").ok_or("no SecretAccessKey")?,
        session_token: s("Token"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s3cret-default

[deploy]
aws_access_key_id=AKIADEPLOY
aws_secret_access_key=s3cret-deploy
aws_session_token = tok
";

    #[test]
    fn profiles() {
        let d = from_profile(FILE, "default").unwrap();
        assert_eq!(
            (d.access_key.as_str(), d.session_token),
            ("AKIADEFAULT", None)
        );
        let p = from_profile(FILE, "deploy").unwrap();
        assert_eq!(p.secret_key, "s3cret-deploy");
        assert_eq!(p.session_token.as_deref(), Some("tok"));
        assert!(from_profile(FILE, "missing").is_none());
    }

    #[tokio::test]
    async fn the_environment_comes_first() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIAENV".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("s3cret-env".to_owned()),
            _ => None,
        };
        assert_eq!(find(&env).await.unwrap().access_key, "AKIAENV");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, FILE).unwrap();
        let path = path.display().to_string();
        let file = |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
            "AWS_PROFILE" => Some("deploy".to_owned()),
            _ => None,
        };
        assert_eq!(find(&file).await.unwrap().access_key, "AKIADEPLOY");
        let none = |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
            "AWS_PROFILE" => Some("nope".to_owned()),
            _ => None,
        };
        let e = find(&none).await.unwrap_err();
        assert!(e.contains("profile `nope`"), "{e}");
    }
}
