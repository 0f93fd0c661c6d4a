//! Where a URL points, judged by parsing it (a prefix test lets
//! `http://localhost:80@evil.example/` through).

use std::net::IpAddr;

/// Whether `url` is an `http://` or `https://` URL to this machine (`localhost`, 127.0.0.0/8,
/// `::1`) with no user name or password in it.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return false;
    }
    match parsed.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_is_loopback_however_the_url_is_dressed() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost/x",
            "http://[::1]:9/token",
            "http://127.1.2.3/",
            "https://LOCALHOST:443",
        ] {
            assert!(is_loopback_url(ok), "{ok}");
        }
        for bad in [
            "https://api.modal.com",
            "http://127.0.0.1.evil.example",
            "http://localhost:80@evil.example/token",
            "http://127.0.0.1:x@evil.example/",
            "http://[::1]:@evil.example/",
            "http://user@127.0.0.1/",
            "ftp://127.0.0.1/",
            "http://localhost.evil.example/",
            "not a url",
        ] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }
}
