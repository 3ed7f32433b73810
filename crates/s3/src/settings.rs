//! Where the S3 server is and who asks, from the places every AWS tool reads them.
//!
//! In the order the AWS SDKs use: the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`), then the profile `AWS_PROFILE` names
//! (`default` otherwise) in the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
//! `~/.aws/credentials`) and the config file (`AWS_CONFIG_FILE`, `~/.aws/config`, where
//! it is `[profile NAME]`). A profile may set `endpoint_url` and, under `s3 =`,
//! `addressing_style = path` for a self-hosted server.

use crate::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use url::Url;

/// How a bucket appears in request URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `https://ENDPOINT/BUCKET/KEY`: what self-hosted servers (MinIO, Ceph RGW, Garage,
    /// s3s) take without DNS set up for every bucket.
    Path,
    /// `https://BUCKET.ENDPOINT/KEY`: AWS's own.
    Virtual,
}

/// What a request needs: the endpoint, the region it is signed for, the credentials.
#[derive(Clone)]
pub struct Settings {
    pub endpoint: Url,
    pub region: String,
    /// Access key, secret key and session token; `None` sends unsigned requests (a
    /// public bucket).
    pub credentials: Option<(String, String, Option<String>)>,
    pub addressing: Addressing,
    /// Where the credentials came from, for messages ("the environment", "profile x").
    pub credentials_from: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("addressing", &self.addressing)
            .field("credentials_from", &self.credentials_from)
            .finish()
    }
}

/// One profile's keys (`s3 =` sub-keys as `s3.addressing_style`).
type Profile = HashMap<String, String>;

/// Parses an AWS shared config or credentials file into its sections. `[profile x]`
/// headers (the config file's) are named `x`. Nested settings (`s3 =` followed by
/// indented `key = value` lines) are named `s3.key`. Lines that are none of these are
/// skipped, as the AWS CLI does with what it does not know.
pub fn parse_ini(text: &str) -> HashMap<String, Profile> {
    let mut sections: HashMap<String, Profile> = HashMap::new();
    let mut current: Option<String> = None;
    let mut parent: Option<String> = None;
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let head = head.trim();
            let name = head.strip_prefix("profile ").unwrap_or(head).trim();
            current = Some(name.to_owned());
            parent = None;
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let Some(section) = &current else { continue };
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        let profile = sections.entry(section.clone()).or_default();
        match (&parent, indented) {
            (Some(p), true) => {
                profile.insert(format!("{p}.{k}"), v);
            }
            _ if v.is_empty() => parent = Some(k),
            _ => {
                parent = None;
                profile.insert(k, v);
            }
        }
    }
    sections
}

impl Settings {
    /// The settings from this process's environment and the user's AWS files.
    pub fn from_env() -> Result<Settings> {
        Settings::resolve(&|name| std::env::var(name).ok(), &|path| {
            std::fs::read_to_string(path).ok()
        })
    }

    /// The settings from the variables `var` gives and the files `read` reads (tests
    /// pass their own).
    pub fn resolve(
        var: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&PathBuf) -> Option<String>,
    ) -> Result<Settings> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_default();
        let file = |env: &str, default: &str| {
            var(env)
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(default))
        };
        let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        let config_file = file("AWS_CONFIG_FILE", ".aws/config");
        let named = var("AWS_PROFILE");
        let profile_name = named.clone().unwrap_or_else(|| "default".into());
        let section =
            |path: &PathBuf| read(path).and_then(|text| parse_ini(&text).remove(&profile_name));
        let from_credentials = section(&credentials_file);
        let from_config = section(&config_file);
        if named.is_some() && from_credentials.is_none() && from_config.is_none() {
            return Err(Error::new(
                ErrorKind::Settings,
                format!(
                    "AWS_PROFILE={profile_name}: no such profile in {} or {}",
                    credentials_file.display(),
                    config_file.display()
                ),
            ));
        }
        // The credentials file wins over the config file for the same key.
        let profile = |key: &str| {
            from_credentials
                .as_ref()
                .and_then(|p| p.get(key))
                .or_else(|| from_config.as_ref().and_then(|p| p.get(key)))
                .filter(|v| !v.is_empty())
                .cloned()
        };

        let (credentials, credentials_from) = match (
            var("AWS_ACCESS_KEY_ID"),
            var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(k), Some(s)) => (
                Some((k, s, var("AWS_SESSION_TOKEN"))),
                "the environment (AWS_ACCESS_KEY_ID)".to_owned(),
            ),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::Settings,
                    "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
                ))
            }
            (None, None) => match (
                profile("aws_access_key_id"),
                profile("aws_secret_access_key"),
            ) {
                (Some(k), Some(s)) => (
                    Some((k, s, profile("aws_session_token"))),
                    format!("profile {profile_name}"),
                ),
                (None, None) => (None, "nowhere (no credentials found)".to_owned()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Settings,
                        format!(
                        "profile {profile_name} sets only one of aws_access_key_id and aws_secret_access_key"
                    ),
                    ))
                }
            },
        };

        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile("region"))
            .unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::new(
                ErrorKind::Settings,
                format!("region {region:?} is not a region name (like eu-west-1)"),
            ));
        }

        let ignore_configured = var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let configured = if ignore_configured {
            None
        } else {
            var("AWS_ENDPOINT_URL_S3")
                .or_else(|| var("AWS_ENDPOINT_URL"))
                .or_else(|| profile("s3.endpoint_url"))
                .or_else(|| profile("endpoint_url"))
        };
        let endpoint_text = configured
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = Url::parse(&endpoint_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Settings,
                    format!("endpoint {endpoint_text:?} is not an http(s) URL (like https://s3.example.net:9000)"),
                )
            })?;
        let addressing = match profile("s3.addressing_style").as_deref() {
            Some("path") => Addressing::Path,
            Some("virtual") => Addressing::Virtual,
            // `auto`, or nothing: AWS's own endpoint takes virtual-hosted names; a
            // configured one is most often a self-hosted server without bucket DNS.
            _ if configured.is_some() => Addressing::Path,
            _ => Addressing::Virtual,
        };
        Ok(Settings {
            endpoint,
            region,
            credentials,
            addressing,
            credentials_from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Settings> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        Settings::resolve(&|n| vars.get(n).cloned(), &|p| files.get(p).cloned())
    }

    #[test]
    fn environment_wins_and_aws_is_the_default() {
        let s = resolve(
            &[
                ("HOME", "/h"),
                ("AWS_ACCESS_KEY_ID", "AK"),
                ("AWS_SECRET_ACCESS_KEY", "SK"),
                ("AWS_REGION", "eu-west-1"),
            ],
            &[(
                "/h/.aws/credentials",
                "[default]\naws_access_key_id = other\naws_secret_access_key = x\n",
            )],
        )
        .unwrap();
        assert_eq!(s.credentials.as_ref().unwrap().0, "AK");
        assert_eq!(s.endpoint.as_str(), "https://s3.eu-west-1.amazonaws.com/");
        assert_eq!(s.addressing, Addressing::Virtual);
        assert!(!format!("{s:?}").contains("SK"));
    }

    #[test]
    fn profiles_from_both_files() {
        let config = "[default]\nregion = us-east-2\n\n[profile lab]\nregion = garage\nendpoint_url = http://10.0.0.5:3900\ns3 =\n  addressing_style = virtual\n# comment\n";
        let creds = "[lab]\naws_access_key_id = LK\naws_secret_access_key = LS\n";
        let files = [("/h/.aws/config", config), ("/h/.aws/credentials", creds)];
        let s = resolve(&[("HOME", "/h"), ("AWS_PROFILE", "lab")], &files).unwrap();
        assert_eq!(s.credentials.as_ref().unwrap().0, "LK");
        assert_eq!(s.region, "garage");
        assert_eq!(s.endpoint.as_str(), "http://10.0.0.5:3900/");
        assert_eq!(s.addressing, Addressing::Virtual);
        assert_eq!(s.credentials_from, "profile lab");
        // The default profile has no keys: unsigned requests.
        let s = resolve(&[("HOME", "/h")], &files).unwrap();
        assert!(s.credentials.is_none());
        assert_eq!(s.region, "us-east-2");
        // An endpoint from the environment means path-style unless a profile says not.
        let s = resolve(
            &[
                ("HOME", "/h"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ],
            &files,
        )
        .unwrap();
        assert_eq!(s.addressing, Addressing::Path);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = resolve(&[("HOME", "/h"), ("AWS_PROFILE", "nope")], &[]).unwrap_err();
        assert!(e.to_string().contains("no such profile"), "{e}");
        let e = resolve(&[("AWS_ACCESS_KEY_ID", "AK")], &[]).unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        let e = resolve(&[("AWS_ENDPOINT_URL", "ftp://x")], &[]).unwrap_err();
        assert!(e.to_string().contains("not an http(s) URL"), "{e}");
        let e = resolve(&[("AWS_REGION", "eu west")], &[]).unwrap_err();
        assert!(e.to_string().contains("not a region"), "{e}");
    }
}
