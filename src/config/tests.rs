use super::health::parse_http_url;
use super::*;

#[test]
fn http_urls() {
    assert_eq!(
        parse_http_url("http://127.0.0.1:8080/healthz"),
        Ok(("127.0.0.1".into(), 8080, "/healthz".into()))
    );
    assert_eq!(
        parse_http_url("http://localhost"),
        Ok(("localhost".into(), 80, "/".into()))
    );
    assert_eq!(
        parse_http_url("http://[::1]:9/x?y=1"),
        Ok(("::1".into(), 9, "/x?y=1".into()))
    );
    assert!(
        parse_http_url("https://a/")
            .unwrap_err()
            .contains("only `http://`")
    );
    assert!(
        parse_http_url("ftp://a/")
            .unwrap_err()
            .contains("not an http:// URL")
    );
    assert!(
        parse_http_url("http://u@a/")
            .unwrap_err()
            .contains("credentials")
    );
}

#[test]
fn names() {
    assert!(valid_name("hello"));
    assert!(valid_name("0x-app_2"));
    assert!(!valid_name("Hello"));
    assert!(!valid_name("-x"));
    assert!(!valid_name("a b"));
    assert!(!valid_name(""));
    assert!(valid_unit("hello@1.service"));
    assert!(!valid_unit("hello;reboot"));
}
