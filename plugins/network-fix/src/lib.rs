//! network-fix: downloads that fail because the network does.
//!
//! Nix retries a failed download with backoff (`...; retrying in 534 ms`): each retry is a
//! temporary finding. The failure becomes permanent when Nix gives up (the same message
//! without the retry), when one host has failed three times, or when the stream ends while
//! retries were still going on. Heals with a resolver that works, another substituter from
//! the profile, or a retry after a pause.

use nixtest_plugin_sdk::prelude::*;
use nixtest_plugin_sdk::regex::Regex;
use nixtest_plugin_sdk::shell;
use std::collections::BTreeMap;
use std::sync::LazyLock;

const CATEGORY: &str = "network";
/// Failures of one host that make the problem permanent even while Nix still retries.
const RETRIES_TO_GIVE_UP: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    Dns,
    Timeout,
    Tls,
    Refused,
    Unreachable,
    Transfer,
    Server,
}

impl Cause {
    /// The word a finding's `cause` detail holds.
    fn name(self) -> &'static str {
        match self {
            Cause::Dns => "dns",
            Cause::Timeout => "timeout",
            Cause::Tls => "tls",
            Cause::Refused => "refused",
            Cause::Unreachable => "unreachable",
            Cause::Transfer => "transfer",
            Cause::Server => "server",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Cause::Dns => "name does not resolve",
            Cause::Timeout => "timed out",
            Cause::Tls => "TLS handshake failed",
            Cause::Refused => "connection refused",
            Cause::Unreachable => "unreachable",
            Cause::Transfer => "transfer broke off",
            Cause::Server => "the server answered with an error",
        }
    }
}

struct Rules {
    /// Nix's download failure, any generation: `unable to download 'URL': REASON`.
    nix_download: Regex,
    retrying: Regex,
    /// Other tools: curl, git, getaddrinfo users.
    tool: Regex,
    fallback_hint: Regex,
    /// Nix's fetchers giving up: `cannot download X from any mirror`, `from any binary cache`.
    gave_up: Regex,
    /// A resolver, TLS or socket failure in any tool's words (curl, git, getaddrinfo users).
    anywhere: Regex,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    Rules {
    nix_download: Regex::new(
        r"(?:unable to download|download of|failed to download|cannot download)\s+['‘](?P<url>[^'’]+)['’](?:\s+failed)?:?\s*(?P<why>.*)",
    )
    .unwrap(),
    retrying: Regex::new(r"retrying in \d+ ms").unwrap(),
    tool: Regex::new(
        r"^(?:curl: \(\d+\)|fatal: unable to access '(?P<url>[^']+)':|wget: unable to resolve host address|ping: |nslookup: |error: cannot connect to)\s*(?P<why>.*)",
    )
    .unwrap(),
    fallback_hint: Regex::new(r"usually happens due to networking issues").unwrap(),
    gave_up: Regex::new(
        r"(?:could not|cannot|unable to) download (?:['‘](?P<q>[^'’]+)['’]|(?P<what>\S+)) from any (?:mirror|binary cache|substituter)",
    )
    .unwrap(),
    anywhere: Regex::new(
        r"(?i)(?:could(?:n't| not) resolve (?:host|proxy)|temporary failure in name resolution|name or service not known|ssl certificate problem|certificate verify failed|unable to get local issuer certificate|ssl connect error|tls handshake (?:failed|timeout)|failed to connect to (?P<host>[\w.-]+) port \d+|(?:connection|operation) timed out after \d+ ?ms|network is unreachable|no route to host)",
    )
    .unwrap(),
}
});

/// The detection patterns, for native baselines and documentation.
pub fn patterns() -> Vec<String> {
    let r = &*RULES;
    [
        &r.nix_download,
        &r.tool,
        &r.fallback_hint,
        &r.gave_up,
        &r.anywhere,
    ]
    .iter()
    .map(|re| re.as_str().to_string())
    .collect()
}

fn cause(reason: &str) -> Option<Cause> {
    let r = reason.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| r.contains(w));
    if has(&[
        "resolve host",
        "resolve hostname",
        "name resolution",
        "name or service not known",
        "could not resolve",
        "unable to resolve",
        "nodename nor servname",
        "(6)",
    ]) {
        Some(Cause::Dns)
    } else if has(&["timeout was reached", "timed out", "(28)"]) {
        Some(Cause::Timeout)
    } else if has(&[
        "ssl",
        "tls",
        "certificate",
        "(35)",
        "(51)",
        "(58)",
        "(60)",
        "(77)",
    ]) {
        Some(Cause::Tls)
    } else if has(&[
        "connection refused",
        "couldn't connect",
        "failed to connect",
        "(7)",
    ]) {
        Some(Cause::Refused)
    } else if has(&["network is unreachable", "no route to host"]) {
        Some(Cause::Unreachable)
    } else if has(&[
        "failure when receiving data",
        "transfer closed",
        "recv failure",
        "connection reset",
        "(56)",
        "(18)",
        "unexpected end-of-file",
    ]) {
        Some(Cause::Transfer)
    } else if has(&[
        // A server error, not a missing file: a narinfo 404 only means "not in this cache".
        "http error 5",
        "returned error: 5",
        "http error 429",
        "returned error: 429",
        "bad gateway",
        "service unavailable",
        "gateway timeout",
    ]) {
        Some(Cause::Server)
    } else {
        None
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[derive(Default)]
struct HostState {
    retries: u32,
    lines: Vec<u32>,
    cause: Option<Cause>,
    gave_up: bool,
}

#[derive(Default)]
pub struct NetworkFix {
    hosts: BTreeMap<String, HostState>,
}

impl Plugin for NetworkFix {
    fn metadata() -> Metadata {
        Metadata::new("network-fix", env!("CARGO_PKG_VERSION"))
            .description("DNS, timeout, TLS and unreachable-cache failures: resolver, alternative substituter, retry")
            .categories([CATEGORY])
            .patterns(patterns().iter().map(String::as_str))
    }
}

impl NetworkFix {
    /// The cause of the most recent failure of any host.
    fn latest_cause(&self) -> Option<Cause> {
        self.hosts
            .values()
            .filter(|s| s.cause.is_some())
            .max_by_key(|s| s.lines.last().copied())
            .and_then(|s| s.cause)
    }

    fn permanent(&mut self, host: &str) -> Option<Finding> {
        let st = self.hosts.get_mut(host)?;
        if st.gave_up {
            return None;
        }
        st.gave_up = true;
        let why = st.cause.map_or("failed", Cause::describe);
        let mut f = Finding::new(CATEGORY, Severity::Error, format!("{host}: {why}"))
            .lines(st.lines.iter().copied())
            .detail("host", host);
        if let Some(c) = st.cause {
            f = f.detail("cause", c.name());
        }
        Some(f)
    }

    fn failure(&mut self, host: &str, why: Cause, line: u32, retrying: bool) -> Vec<Finding> {
        let st = self.hosts.entry(host.to_string()).or_default();
        st.lines.push(line);
        st.cause = Some(st.cause.map_or(why, |c| c.min(why)));
        let mut out = Vec::new();
        if retrying {
            st.retries += 1;
            let retries = st.retries;
            out.push(
                Finding::new(
                    CATEGORY,
                    Severity::Warning,
                    format!("{host}: {} (retry {retries})", why.describe()),
                )
                .line(line)
                .detail("host", host)
                .detail("cause", why.name())
                .temporary(),
            );
            if retries >= RETRIES_TO_GIVE_UP {
                out.extend(self.permanent(host));
            }
        } else {
            out.extend(self.permanent(host));
        }
        out
    }
}

impl Detector for NetworkFix {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        let r = &*RULES;
        let mut found = Vec::new();
        for e in events {
            let msg = e.message.as_str();
            if let Some(c) = r.nix_download.captures(msg) {
                let (url, why) = (&c["url"], &c["why"]);
                if let Some(cause) = cause(why) {
                    let host = host_of(url).to_string();
                    found.extend(self.failure(&host, cause, e.line, r.retrying.is_match(why)));
                }
            } else if let Some(c) = r.tool.captures(msg)
                && !msg.contains("socket")
            {
                // `cannot connect to socket at '/nix/var/nix/daemon-socket/...'` is the local
                // daemon, not the network.
                let url = c.name("url").map_or("network", |m| host_of(m.as_str()));
                let why = format!("{msg} {}", &c["why"]);
                if let Some(cause) = cause(&why) {
                    let host = url.to_string();
                    found.extend(self.failure(&host, cause, e.line, false));
                }
            } else if let Some(c) = r.gave_up.captures(msg) {
                // What failed before says why; the giving up itself is the permanent failure.
                let what = c.name("q").or(c.name("what")).map_or("", |m| m.as_str());
                let host = if what.contains("://") {
                    host_of(what)
                } else {
                    "download"
                };
                let why = self.latest_cause().unwrap_or(Cause::Unreachable);
                found.extend(self.failure(host, why, e.line, false));
            } else if r.fallback_hint.is_match(msg) {
                found.extend(self.failure("substituter", Cause::Unreachable, e.line, false));
            } else if !msg.trim_start().starts_with("ssh:")
                && let Some(c) = r.anywhere.captures(msg)
                && let Some(cause) = cause(msg)
            {
                // ssh's own failures to connect are the ssh detector's.
                let host = c.name("host").map_or("network", |m| m.as_str()).to_string();
                found.extend(self.failure(&host, cause, e.line, false));
            }
        }
        found
    }

    fn finish(&mut self) -> Vec<Finding> {
        let pending: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, s)| !s.gave_up)
            .map(|(h, _)| h.clone())
            .collect();
        pending.iter().filter_map(|h| self.permanent(h)).collect()
    }
}

impl Healer for NetworkFix {
    fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
        if finding.category != CATEGORY {
            return Vec::new();
        }
        let phase = cx.phase.as_str();
        let facts = &cx.facts;
        let mut actions = Vec::new();
        // What failed and why, from the finding's details; compare names without ports.
        let failing = finding.detail_value("host").unwrap_or("the binary cache");
        let failing_name = without_port(failing);
        let dns = finding.detail_value("cause") == Some(Cause::Dns.name());

        // Another substituter the profile lists (whether it answers is not known: the guest
        // may have no network at all, so building locally ranks above it).
        // The guest reports them: one that is not a plain URL would become code in the
        // command or the Nix file it goes into, and is not offered.
        let alternatives: Vec<&String> = facts
            .substituters
            .iter()
            .filter(|s| shell::is_plain_url(s))
            .filter(|s| without_port(host_of(s)) != failing_name)
            .collect();
        if let Some(alt) = alternatives.first() {
            let mut action = HealingAction::new(
                "use-alternative-substituter",
                format!("{failing} fails; use the profile's substituter {alt}"),
                0.5,
            )
            .command(format!(
                "mkdir -p /etc/nix && touch /etc/nix/nix.conf && sed -i '/^substituters *=/d' /etc/nix/nix.conf && echo {} >> /etc/nix/nix.conf",
                shell::quote(&format!("substituters = {alt}"))
            ));
            if let Some(first) = facts.substituters.first() {
                for file in &cx.config {
                    if file.content.contains(first.as_str()) && first != *alt {
                        action = action
                            .config_change(&file.path, file.content.replace(first.as_str(), alt));
                    }
                }
            }
            actions.push(action.retry(phase));
        }

        // A resolver that works, for names that do not resolve.
        if dns && let Some(ns) = facts.resolvers.iter().find(|r| shell::is_ip_address(r)) {
            actions.push(
                HealingAction::new(
                    "use-working-resolver",
                    format!("names do not resolve; use the resolver {ns}"),
                    0.35,
                )
                .command(format!(
                    "printf 'nameserver %s\\n' {} > /etc/resolv.conf",
                    shell::quote(ns)
                ))
                .retry(phase),
            );
        }

        // Build everything locally: slower, but needs no network.
        actions.push(
            HealingAction::new(
                "build-without-substituters",
                format!("{failing} cannot be reached; build locally"),
                0.6,
            )
            .command(
                "mkdir -p /etc/nix && touch /etc/nix/nix.conf && sed -i '/^substituters *=/d' /etc/nix/nix.conf && echo 'substituters =' >> /etc/nix/nix.conf",
            )
            .retry(phase),
        );

        // Waiting helps with timeouts and flaky links, rarely with DNS.
        let wait = 5 + 5 * cx.attempt.min(5);
        let confidence = if dns { 0.2 } else { 0.4 };
        actions.push(
            HealingAction::new(
                "retry-with-backoff",
                format!("wait {wait} s and retry"),
                confidence,
            )
            .command(format!("sleep {wait}"))
            .retry(phase),
        );
        actions
    }
}

nixtest_plugin_sdk::export_plugin!(NetworkFix);

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing::{self, FactsBuilder};

    const RETRY: &str = "warning: error: unable to download 'https://cache.example.org/nix-cache-info': Could not resolve hostname (6) Could not resolve host: cache.example.org; retrying in 301 ms\n";

    #[test]
    fn one_retry_is_temporary() {
        let f = testing::detect_str::<NetworkFix>(RETRY);
        // At the end of the stream an unresolved retry becomes permanent.
        assert_eq!(f.len(), 2);
        assert!(!f[0].permanent && f[0].severity == Severity::Warning);
        assert!(f[1].permanent && f[1].severity == Severity::Error);
    }

    #[test]
    fn retries_then_recovery_mid_stream_are_not_yet_errors() {
        let mut d = NetworkFix::default();
        let events: Vec<Event> = (1..=2)
            .map(|i| Event {
                kind: EventKind::Raw,
                phase: String::new(),
                message: RETRY.trim_end().to_string(),
                line: i,
                fields: vec![],
            })
            .collect();
        let f = d.feed(&events);
        assert!(f.iter().all(|f| !f.permanent), "{f:?}");
    }

    #[test]
    fn third_retry_of_a_host_is_permanent() {
        let log = RETRY.repeat(3);
        let f = testing::detect_str::<NetworkFix>(&log);
        let errors = testing::errors(&f);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].summary,
            "cache.example.org: name does not resolve"
        );
        assert_eq!(errors[0].lines, vec![1, 2, 3]);
    }

    #[test]
    fn final_error_and_other_tools() {
        for line in [
            "error: unable to download 'https://nixos.org/channels/x': Timeout was reached (28)",
            "error: unable to download ‘http://ftp.example.org/perl.tar.gz’: Couldn't resolve host name (6)",
            "curl: (7) Failed to connect to cache.local port 8080: Connection refused",
            "fatal: unable to access 'https://github.com/x/y/': Could not resolve host: github.com",
        ] {
            assert_eq!(
                testing::errors(&testing::detect_str::<NetworkFix>(line)).len(),
                1,
                "{line}"
            );
        }
    }

    #[test]
    fn not_found_is_not_a_network_failure() {
        let line =
            "warning: unable to download 'https://cache.example.org/x.narinfo': HTTP error 404";
        assert!(testing::detect_str::<NetworkFix>(line).is_empty());
    }

    #[test]
    fn heal_offers_the_other_substituter_a_resolver_and_local_builds() {
        let facts = FactsBuilder::new()
            .substituter("http://cache.nixtest.internal:8080")
            .substituter("http://10.0.2.100:8080")
            .resolver("10.0.2.3")
            .build();
        let config =
            "{ nix.settings.substituters = [ \"http://cache.nixtest.internal:8080\" ]; }\n";
        let cx = testing::context(facts, "install", &[("configuration.nix", config)]);
        let finding = Finding::new(
            CATEGORY,
            Severity::Error,
            "cache.nixtest.internal:8080: name does not resolve",
        )
        .detail("host", "cache.nixtest.internal:8080")
        .detail("cause", "dns");
        let actions = testing::heal::<NetworkFix>(&finding, &cx);
        assert_eq!(actions[0].name, "build-without-substituters");
        let top = actions
            .iter()
            .find(|a| a.name == "use-alternative-substituter")
            .unwrap();
        assert!(
            top.description
                .contains("cache.nixtest.internal:8080 fails")
        );
        assert_eq!(top.config_changes.len(), 1);
        assert_eq!(
            top.config_changes[0].content,
            "{ nix.settings.substituters = [ \"http://10.0.2.100:8080\" ]; }\n"
        );
        assert_eq!(top.retry_phase.as_deref(), Some("install"));
        assert!(actions.iter().any(|a| a.name == "use-working-resolver"));
        assert!(actions.iter().any(|a| a.name == "retry-with-backoff"));
    }

    #[test]
    fn the_failing_cache_is_never_its_own_alternative() {
        let facts = FactsBuilder::new()
            .substituter("http://cache.nixtest.internal:8080")
            .build();
        let cx = testing::context(facts, "install", &[]);
        let finding = Finding::new(
            CATEGORY,
            Severity::Error,
            "cache.nixtest.internal:8080: timed out",
        )
        .detail("host", "cache.nixtest.internal:8080")
        .detail("cause", "timeout");
        let actions = testing::heal::<NetworkFix>(&finding, &cx);
        assert!(
            actions
                .iter()
                .all(|a| a.name != "use-alternative-substituter")
        );
    }

    #[test]
    fn a_resolver_or_cache_the_guest_reports_with_shell_or_nix_code_is_never_used() {
        let facts = FactsBuilder::new()
            .substituter("http://cache.nixtest.internal:8080")
            .substituter("http://x'; touch /tmp/pwned; '")
            .substituter("http://y/${builtins.abort \"pwned\"}")
            .substituter("http://10.0.2.100:8080")
            .resolver("10.0.2.3'; touch /tmp/pwned; '")
            .resolver("10.0.2.3")
            .build();
        let config =
            "{ nix.settings.substituters = [ \"http://cache.nixtest.internal:8080\" ]; }\n";
        let cx = testing::context(facts, "install", &[("configuration.nix", config)]);
        let finding = Finding::new(CATEGORY, Severity::Error, "no resolve")
            .detail("host", "cache.nixtest.internal:8080")
            .detail("cause", "dns");
        let actions = testing::heal::<NetworkFix>(&finding, &cx);
        for a in &actions {
            for text in a
                .commands
                .iter()
                .chain(a.config_changes.iter().map(|c| &c.content))
            {
                assert!(!text.contains("pwned"), "{}: {text}", a.name);
            }
        }
        let alt = actions
            .iter()
            .find(|a| a.name == "use-alternative-substituter")
            .unwrap();
        assert!(alt.commands[0].contains("'substituters = http://10.0.2.100:8080'"));
        let resolver = actions
            .iter()
            .find(|a| a.name == "use-working-resolver")
            .unwrap();
        assert_eq!(
            resolver.commands,
            ["printf 'nameserver %s\\n' 10.0.2.3 > /etc/resolv.conf"]
        );
    }
}
