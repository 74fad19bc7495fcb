//! Guest facts (mount points, disk paths, resolvers, substituters) are what the system under
//! test reports about itself. A healer that puts one into a guest command or a Nix file must
//! not let it become code there: quote it for the shell, or use it only when it is plain.

/// `word` as one argument of a POSIX shell command, whatever it holds: left as it is when it
/// is made of characters a shell gives no meaning, else single-quoted (a quote inside
/// written as `'\''`).
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@%+=,".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Whether `s` is a URL that can go as it is into a shell word and between the quotes of a
/// Nix string: no whitespace, quotes, backslashes, `$`, backticks, `;`, or control
/// characters; only the characters of URLs as binary caches spell them.
pub fn is_plain_url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/._~%?=&+@,-".contains(&b))
}

/// Whether `s` is a device path (`/dev/...`) of plain characters, fit for a Nix string or a
/// shell word as it is.
pub fn is_plain_device(s: &str) -> bool {
    s.strip_prefix("/dev/").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.split('/').any(|part| part == "..")
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._:+-".contains(&b))
    })
}

/// Whether `s` is an IP address, as `nameserver` lines give them (IPv6 may carry a zone,
/// `fe80::1%eth0`, whose name is letters, digits, `.`, `_` and `-`).
pub fn is_ip_address(s: &str) -> bool {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    let zone_ok = zone.is_none_or(|z| {
        !z.is_empty()
            && z.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => zone_ok,
        Ok(std::net::IpAddr::V4(_)) => zone.is_none(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_quoted_word_reaches_the_command_as_it_was() {
        for word in [
            "plain",
            "",
            "a b",
            "it's",
            "$(touch /tmp/x)",
            "`id`",
            "x'; reboot; '",
            "back\\slash",
            "new\nline",
            "'",
            "''",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{word:?}");
        }
    }

    #[test]
    fn plain_values_are_told_from_hostile_ones() {
        assert!(is_plain_url("https://cache.nixos.org"));
        assert!(is_plain_url("http://10.0.2.2:8080/?priority=40"));
        assert!(!is_plain_url("http://x'; reboot; '"));
        assert!(!is_plain_url("http://x/${builtins.abort \"\"}"));
        assert!(!is_plain_url("http://x y"));
        assert!(is_plain_device("/dev/vdb"));
        assert!(is_plain_device("/dev/disk/by-id/virtio-nixtest_b-part1"));
        assert!(!is_plain_device("/dev/vdb\"; x = \"y"));
        assert!(!is_plain_device("/dev/../etc/passwd"));
        assert!(!is_plain_device("/etc/passwd"));
        assert!(is_ip_address("10.0.2.3"));
        assert!(is_ip_address("fe80::1%eth0"));
        assert!(is_ip_address("2001:db8::53"));
        assert!(!is_ip_address("10.0.2.3%eth0"));
        assert!(!is_ip_address("1.1.1.1'; reboot; '"));
        assert!(!is_ip_address("fe80::1%$(reboot)"));
    }
}
