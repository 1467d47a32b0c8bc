//! Content inspection of message bodies: links, blocklisted domains and URLs, executable
//! downloads, look-alike domains, keywords, regular expressions, card numbers and the EICAR test
//! string. Pure: the caller reads the rules file and passes its text to
//! [`Inspector::from_rules`]; reloading is building a new [`Inspector`] and swapping it in.
//!
//! # Rules file
//!
//! One rule or setting per line; `#` starts a comment line; blank lines are ignored. A rule is
//! `ACTION KIND [ARGUMENT]`, where `ACTION` is `allow`, `tag`, `quarantine` or `reject`:
//!
//! ```text
//! # settings
//! set inspect_hub true        # also inspect hub-to-hub messages (default false)
//! set max_links 32            # more links than this in one body fires rule `link-count`
//! set max_body_bytes 65536    # a larger body fires rule `body-size` (not inspected further)
//! set link_count_action reject
//! set body_size_action reject
//!
//! allow      domain      intranet.example.com         # links there skip every link rule
//! reject     domain      evil.example                 # also any subdomain
//! reject     url         http://x.example/files/      # prefix of scheme-less host+path
//! reject     executable                               # .exe .pif .scr .com .bat .cmd .vbs ...
//! quarantine executable  .apk .dmg                    # or your own list of extensions
//! reject     lookalike   paypal.com                   # paypa1.com, раураl.com, xn--...
//! tag        keyword     confidential                 # case-insensitive substring
//! # a regex rule is NAME then PATTERN: the whole rest of the line, so no comment after it
//! quarantine regex       ssn  \b\d{3}-\d{2}-\d{4}\b
//! reject     card                                     # 13-19 digits passing the Luhn check
//! reject     eicar                                    # the EICAR anti-virus test string
//! ```
//!
//! `executable` looks at the last segment of a link's path and of each query value
//! (`get.php?file=setup.exe`), after decoding `%2e` and `%2f`.
//!
//! A comment may follow a rule or setting after ` #`, except on `regex` lines.
//!
//! Every rule has a name, which the verdict carries and the sender is shown: `domain:evil.example`,
//! `url:x.example/files/`, `executable:.pif` (the extension that matched), `lookalike:paypal.com`,
//! `keyword:confidential`, `regex:ssn`, `card`, `eicar`, `link-count`, `body-size`.
//!
//! When several rules fire, the most severe action wins (reject, then quarantine, then tag); among
//! equals the first in the file. `allow` is only valid for `domain` and `url` rules: it exempts the
//! matching links from every other link rule (domain, url, executable, look-alike); body rules
//! (keyword, regex, card, eicar) still apply to the whole text.
//!
//! Limits: the rules text is at most [`MAX_RULES_BYTES`], [`MAX_RULES`] rules, lines of at most
//! [`MAX_LINE_BYTES`]; at most [`MAX_REGEX_RULES`] regular expressions, each compiled within
//! [`REGEX_SIZE_LIMIT`] and all of them together within [`REGEX_SET_SIZE_LIMIT`]; protected
//! (`lookalike`) domains of at most [`MAX_LOOKALIKE_LABELS`] labels. Link extraction stops after
//! `max_links + 1` links. So building an [`Inspector`] is bounded by the text's size, and
//! inspecting a body is linear in the body, whatever the rules: every link is compared with the
//! executable extensions through one table, and with the protected domains by windows of at most
//! [`MAX_LOOKALIKE_LABELS`] labels; the regular expressions run as one automaton of bounded
//! size.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{RegexSet, RegexSetBuilder};
use std::collections::HashMap;
use std::fmt;

use entente_model::{ErrorCode, Event, Message};

use crate::Refusal;

/// Largest rules text accepted.
pub const MAX_RULES_BYTES: usize = 1 << 20;
/// Most rules in one file.
pub const MAX_RULES: usize = 10_000;
/// Longest line of a rules file.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most `regex` rules in one file.
pub const MAX_REGEX_RULES: usize = 256;
/// Compiled size limit of one regular expression.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Compiled size limit of all regular expressions together. The time a body takes in the worst
/// case grows with it: the regex engine is linear in the body times the automaton's size.
pub const REGEX_SET_SIZE_LIMIT: usize = 2 << 20;
/// Most labels of a protected (`lookalike`) domain.
pub const MAX_LOOKALIKE_LABELS: usize = 8;
/// Highest `max_links` a file may set.
const MAX_LINKS_CEILING: usize = 4096;

/// Highest `max_body_bytes` a file may set.
const MAX_BODY_CEILING: usize = 16 << 20;

/// The extensions `executable` stands for when no list is given.
pub const DEFAULT_EXECUTABLES: &[&str] = &[
    "exe", "pif", "scr", "com", "bat", "cmd", "vbs", "vbe", "js", "jse", "jar", "msi", "msp",
    "cpl", "hta", "wsf", "wsh", "ps1", "lnk", "reg", "dll", "apk", "app", "dmg", "sh", "iso",
];

/// The EICAR anti-virus test file (68 bytes).
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Where a message is: crossing a federation boundary, or staying inside the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// From or to a partner (XMPP, SIP).
    Federation,
    /// Hub user to hub user.
    Hub,
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    Tag,
    Quarantine,
    Reject,
}

impl Action {
    fn parse(word: &str) -> Option<Action> {
        match word {
            "allow" => Some(Action::Allow),
            "tag" => Some(Action::Tag),
            "quarantine" => Some(Action::Quarantine),
            "reject" => Some(Action::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Reject => "reject",
        }
    }
}

/// The outcome of inspecting one message; every non-`Allow` verdict names the rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Deliver, marked with the rule's name.
    Tag(String),
    /// Hold for review; the sender is told it was not delivered.
    Quarantine(String),
    /// Refuse; the sender is told which rule refused it.
    Reject(String),
}

impl Verdict {
    /// The name of the rule that fired, if any.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Verdict::Allow => None,
            Verdict::Tag(r) | Verdict::Quarantine(r) | Verdict::Reject(r) => Some(r),
        }
    }

    /// What the sender sees when the message is not delivered (quarantine or reject).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Verdict::Allow | Verdict::Tag(_) => None,
            Verdict::Quarantine(rule) => Some(Refusal::held(
                ErrorCode::PolicyViolation,
                format!("message held for review by content rule {rule}"),
            )),
            Verdict::Reject(rule) => Some(Refusal::new(
                ErrorCode::PolicyViolation,
                format!("message refused by content rule {rule}"),
            )),
        }
    }

    fn from_hit(action: Action, rule: String) -> Verdict {
        match action {
            Action::Allow => Verdict::Allow,
            Action::Tag => Verdict::Tag(rule),
            Action::Quarantine => Verdict::Quarantine(rule),
            Action::Reject => Verdict::Reject(rule),
        }
    }
}

/// A rules file that could not be used; `line` is 1-based (0 for the whole text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules line {line}: {message}")]
pub struct RuleError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> RuleError {
    RuleError {
        line,
        message: message.into(),
    }
}

/// A link found in a body, with its host normalised to lower-case ASCII (punycode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The text as written.
    pub text: String,
    /// Lower-case ASCII host, without port, user info or trailing dot.
    pub host: String,
    /// The host as written (case and script kept), for look-alike checks.
    pub written_host: String,
    /// The path as written (percent escapes of `.` and `/` decoded), without query or fragment.
    pub path: String,
    /// The query as written, without `?` or fragment.
    pub query: String,
}

impl Link {
    /// Host and path, scheme-less: what `url` rules and link fingerprints compare.
    pub fn normalized(&self) -> String {
        format!("{}{}", self.host, self.path)
    }
}

#[derive(Debug, Clone)]
struct Hit {
    action: Action,
    order: usize,
    name: String,
}

#[derive(Debug, Clone)]
struct Settings {
    inspect_hub: bool,
    max_links: usize,
    max_body_bytes: usize,
    link_count_action: Action,
    body_size_action: Action,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            inspect_hub: false,
            max_links: 32,
            max_body_bytes: 65536,
            link_count_action: Action::Reject,
            body_size_action: Action::Reject,
        }
    }
}

#[derive(Debug, Clone)]
struct Ruled<T> {
    action: Action,
    order: usize,
    value: T,
}

struct Lookalike {
    domain: String,
    labels: usize,
    skeleton: String,
}

/// Compiled rules. Cheap to share (`Arc<Inspector>`) and immutable: reload by building anew.
pub struct Inspector {
    settings: Settings,
    domains: HashMap<String, Ruled<()>>,
    urls: Vec<Ruled<String>>,
    /// Each extension an `executable` rule names, to the rule that wins for it: the most severe,
    /// the first among equals (all of them would fire under the same name).
    executables: HashMap<String, Ruled<()>>,
    lookalikes: Vec<Ruled<Lookalike>>,
    /// Skeleton (and ASCII form) of each protected domain to its rules.
    lookalike_index: HashMap<String, Vec<usize>>,
    /// The distinct label counts of protected domains.
    lookalike_lengths: Vec<usize>,
    keywords: Vec<Ruled<String>>,
    keyword_matcher: Option<AhoCorasick>,
    regex_rules: Vec<Ruled<String>>,
    regex_set: Option<RegexSet>,
    card: Option<Ruled<()>>,
    eicar: Option<Ruled<()>>,
    rule_count: usize,
}

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("rules", &self.rule_count)
            .field("inspect_hub", &self.settings.inspect_hub)
            .field("max_links", &self.settings.max_links)
            .finish()
    }
}

impl Inspector {
    /// Parses and compiles a rules file (see the module documentation for the format).
    pub fn from_rules(text: &str) -> Result<Inspector, RuleError> {
        if text.len() > MAX_RULES_BYTES {
            return Err(err(
                0,
                format!(
                    "rules text is {} bytes, more than {MAX_RULES_BYTES}",
                    text.len()
                ),
            ));
        }
        let mut ins = Inspector {
            settings: Settings::default(),
            domains: HashMap::new(),
            urls: Vec::new(),
            executables: HashMap::new(),
            lookalikes: Vec::new(),
            lookalike_index: HashMap::new(),
            lookalike_lengths: Vec::new(),
            keywords: Vec::new(),
            keyword_matcher: None,
            regex_rules: Vec::new(),
            regex_set: None,
            card: None,
            eicar: None,
            rule_count: 0,
        };
        let mut patterns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let no = index + 1;
            if raw.len() > MAX_LINE_BYTES {
                return Err(err(no, format!("line longer than {MAX_LINE_BYTES} bytes")));
            }
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (first, rest) = split_word(line);
            if first == "set" {
                ins.parse_setting(no, rest)?;
                continue;
            }
            let action = Action::parse(first).ok_or_else(|| {
                err(
                    no,
                    format!("unknown action `{first}` (allow, tag, quarantine, reject or set)"),
                )
            })?;
            if ins.rule_count >= MAX_RULES {
                return Err(err(no, format!("more than {MAX_RULES} rules")));
            }
            let order = ins.rule_count;
            ins.rule_count += 1;
            let (kind, arg) = split_word(rest);
            let arg_words = strip_comment(arg);
            if action == Action::Allow && kind != "domain" && kind != "url" {
                return Err(err(no, "`allow` applies only to `domain` and `url` rules"));
            }
            match kind {
                "domain" => {
                    let domain = single(no, kind, arg_words)?;
                    let domain = normalize_host(domain)
                        .ok_or_else(|| err(no, format!("`{domain}` is not a domain name")))?;
                    // The first rule for a domain wins, as documented for equals.
                    ins.domains.entry(domain).or_insert(Ruled {
                        action,
                        order,
                        value: (),
                    });
                }
                "url" => {
                    let url = single(no, kind, arg_words)?;
                    let link =
                        parse_link(url).ok_or_else(|| err(no, format!("`{url}` is not a URL")))?;
                    ins.urls.push(Ruled {
                        action,
                        order,
                        value: link.normalized(),
                    });
                }
                "executable" => {
                    let mut exts: Vec<String> = arg_words
                        .split_whitespace()
                        .map(|e| e.trim_start_matches('.').to_lowercase())
                        .collect();
                    if exts.iter().any(|e| e.is_empty() || e.contains('/')) {
                        return Err(err(no, "an extension is empty or contains `/`"));
                    }
                    if exts.is_empty() {
                        exts = DEFAULT_EXECUTABLES.iter().map(|e| e.to_string()).collect();
                    }
                    for ext in exts {
                        let rule = ins.executables.entry(ext).or_insert(Ruled {
                            action,
                            order,
                            value: (),
                        });
                        // Rules come in order: a later one wins only by being more severe.
                        if action > rule.action {
                            *rule = Ruled {
                                action,
                                order,
                                value: (),
                            };
                        }
                    }
                }
                "lookalike" => {
                    let domain = single(no, kind, arg_words)?;
                    let ascii = normalize_host(domain)
                        .ok_or_else(|| err(no, format!("`{domain}` is not a domain name")))?;
                    let labels = ascii.split('.').count();
                    if labels > MAX_LOOKALIKE_LABELS {
                        return Err(err(
                            no,
                            format!(
                                "`{domain}` has more than {MAX_LOOKALIKE_LABELS} labels for `lookalike`"
                            ),
                        ));
                    }
                    let skeleton = host_skeleton(&ascii);
                    ins.lookalikes.push(Ruled {
                        action,
                        order,
                        value: Lookalike {
                            domain: ascii,
                            labels,
                            skeleton,
                        },
                    });
                }
                "keyword" => {
                    // The rest of the line: a keyword may be a phrase with spaces.
                    let word = arg_words;
                    if word.is_empty() {
                        return Err(err(no, "`keyword` needs a word or phrase"));
                    }
                    ins.keywords.push(Ruled {
                        action,
                        order,
                        value: word.to_lowercase(),
                    });
                }
                "regex" => {
                    let (name, pattern) = split_word(arg);
                    let pattern = pattern.trim();
                    if name.is_empty() || pattern.is_empty() {
                        return Err(err(no, "`regex` needs a NAME and a PATTERN"));
                    }
                    if ins.regex_rules.len() >= MAX_REGEX_RULES {
                        return Err(err(no, format!("more than {MAX_REGEX_RULES} regex rules")));
                    }
                    regex::RegexBuilder::new(pattern)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .dfa_size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| err(no, format!("regex `{name}`: {e}")))?;
                    patterns.push(pattern.to_string());
                    ins.regex_rules.push(Ruled {
                        action,
                        order,
                        value: name.to_string(),
                    });
                }
                "card" | "eicar" => {
                    if !arg_words.is_empty() {
                        return Err(err(no, format!("`{kind}` takes no argument")));
                    }
                    let slot = if kind == "card" {
                        &mut ins.card
                    } else {
                        &mut ins.eicar
                    };
                    if slot.is_none() {
                        *slot = Some(Ruled {
                            action,
                            order,
                            value: (),
                        });
                    }
                }
                "" => return Err(err(no, "missing rule kind after the action")),
                other => {
                    return Err(err(
                        no,
                        format!(
                            "unknown rule kind `{other}` (domain, url, executable, lookalike, \
                             keyword, regex, card, eicar)"
                        ),
                    ))
                }
            }
        }
        for (i, rule) in ins.lookalikes.iter().enumerate() {
            let p = &rule.value;
            for key in [p.skeleton.clone(), p.domain.clone()] {
                let entry = ins.lookalike_index.entry(key).or_default();
                if !entry.contains(&i) {
                    entry.push(i);
                }
            }
            if !ins.lookalike_lengths.contains(&p.labels) {
                ins.lookalike_lengths.push(p.labels);
            }
        }
        if !ins.keywords.is_empty() {
            let matcher = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(ins.keywords.iter().map(|k| k.value.as_str()))
                .map_err(|e| err(0, format!("keywords: {e}")))?;
            ins.keyword_matcher = Some(matcher);
        }
        if !patterns.is_empty() {
            let set = RegexSetBuilder::new(&patterns)
                .size_limit(REGEX_SET_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SET_SIZE_LIMIT * 4)
                .build()
                .map_err(|e| err(0, format!("regex rules together: {e}")))?;
            ins.regex_set = Some(set);
        }
        Ok(ins)
    }

    fn parse_setting(&mut self, no: usize, rest: &str) -> Result<(), RuleError> {
        let (key, value) = split_word(rest);
        let value = single(no, key, strip_comment(value))?;
        let action = || {
            Action::parse(value)
                .filter(|a| *a != Action::Allow)
                .ok_or_else(|| {
                    err(
                        no,
                        format!("`{key}` is tag, quarantine or reject, not `{value}`"),
                    )
                })
        };
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| err(no, format!("`{key}` needs a number, not `{value}`")))
        };
        match key {
            "inspect_hub" => {
                self.settings.inspect_hub = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(err(no, "`inspect_hub` is true or false")),
                }
            }
            "max_links" => {
                let n = number()?;
                if n > MAX_LINKS_CEILING {
                    return Err(err(
                        no,
                        format!("`max_links` is at most {MAX_LINKS_CEILING}"),
                    ));
                }
                self.settings.max_links = n;
            }
            "max_body_bytes" => {
                let n = number()?;
                if n > MAX_BODY_CEILING {
                    return Err(err(
                        no,
                        format!("`max_body_bytes` is at most {MAX_BODY_CEILING}"),
                    ));
                }
                self.settings.max_body_bytes = n;
            }
            "link_count_action" => self.settings.link_count_action = action()?,
            "body_size_action" => self.settings.body_size_action = action()?,
            other => return Err(err(no, format!("unknown setting `{other}`"))),
        }
        Ok(())
    }

    /// Whether hub-to-hub messages are inspected too.
    pub fn inspects_hub(&self) -> bool {
        self.settings.inspect_hub
    }

    /// Inspects a message's body for the given boundary.
    pub fn inspect(&self, message: &Message, boundary: Boundary) -> Verdict {
        if boundary == Boundary::Hub && !self.settings.inspect_hub {
            return Verdict::Allow;
        }
        self.inspect_text(&message.body)
    }

    /// Inspects an event: messages as [`Inspector::inspect`]; every other event is allowed.
    pub fn inspect_event(&self, event: &Event, boundary: Boundary) -> Verdict {
        match event {
            Event::Message(message) => self.inspect(message, boundary),
            _ => Verdict::Allow,
        }
    }

    /// Inspects a text as if it were a message body crossing a federation boundary.
    pub fn inspect_text(&self, body: &str) -> Verdict {
        if body.len() > self.settings.max_body_bytes {
            return Verdict::from_hit(self.settings.body_size_action, "body-size".to_string());
        }
        let mut best: Option<Hit> = None;
        let mut fire = |action: Action, order: usize, name: String| {
            let better = match &best {
                None => true,
                Some(b) => action > b.action || (action == b.action && order < b.order),
            };
            if better {
                best = Some(Hit {
                    action,
                    order,
                    name,
                });
            }
        };

        let links = extract_links(body, self.settings.max_links + 1);
        if links.len() > self.settings.max_links {
            // Ordered before every rule: it is a property of the message, not of one link.
            fire(self.settings.link_count_action, 0, "link-count".to_string());
        }
        for link in links.iter().take(self.settings.max_links) {
            self.inspect_link(link, &mut fire);
        }

        if let Some(matcher) = &self.keyword_matcher {
            let lower = body.to_lowercase();
            for m in matcher.find_overlapping_iter(&lower) {
                if let Some(rule) = self.keywords.get(m.pattern().as_usize()) {
                    fire(rule.action, rule.order, format!("keyword:{}", rule.value));
                }
            }
        }
        if let Some(set) = &self.regex_set {
            for i in set.matches(body).iter() {
                if let Some(rule) = self.regex_rules.get(i) {
                    fire(rule.action, rule.order, format!("regex:{}", rule.value));
                }
            }
        }
        if let Some(rule) = &self.card {
            if contains_card_number(body) {
                fire(rule.action, rule.order, "card".to_string());
            }
        }
        if let Some(rule) = &self.eicar {
            if body.contains(EICAR) {
                fire(rule.action, rule.order, "eicar".to_string());
            }
        }
        match best {
            None => Verdict::Allow,
            Some(hit) => Verdict::from_hit(hit.action, hit.name),
        }
    }

    fn inspect_link(&self, link: &Link, fire: &mut impl FnMut(Action, usize, String)) {
        // Domain rules: the host or any parent domain, most specific first.
        let mut domain_hit = None;
        for suffix in host_suffixes(&link.host) {
            if let Some(rule) = self.domains.get(suffix) {
                domain_hit = Some((rule.action, rule.order, suffix));
                break;
            }
        }
        let normalized = link.normalized();
        let url_hit = self
            .urls
            .iter()
            .filter(|r| normalized.starts_with(&r.value))
            .min_by_key(|r| r.order);
        let allowed = matches!(domain_hit, Some((Action::Allow, _, _)))
            || matches!(url_hit, Some(r) if r.action == Action::Allow);
        if allowed {
            return;
        }
        if let Some((action, order, suffix)) = domain_hit {
            fire(action, order, format!("domain:{suffix}"));
        }
        if let Some(rule) = url_hit {
            fire(rule.action, rule.order, format!("url:{}", rule.value));
        }
        if !self.executables.is_empty() {
            // The path, and the values of the query (`get.php?file=setup.exe`), at most 32.
            let values = link
                .query
                .split('&')
                .filter_map(|pair| pair.split_once('=').map(|(_, v)| v))
                .take(32);
            let exts = std::iter::once(link.path.as_str())
                .chain(values)
                .filter_map(|p| file_extension(&decode_dots(p)));
            for ext in exts {
                if let Some(rule) = self.executables.get(&ext) {
                    fire(rule.action, rule.order, format!("executable:.{ext}"));
                }
            }
        }
        if !self.lookalikes.is_empty() {
            // Skeletons of every run of as many labels as some protected domain has, so that
            // `paypa1.com`, `login.paypa1.com` and `paypa1.com.evil.example` all match; computed
            // once per link, then looked up. The host as written counts too: a capital `I`
            // looks like `l` only before lower-casing.
            // The skeleton works character by character and `.` is its own skeleton, so a
            // window's skeleton is its labels' skeletons joined: each label is mapped once.
            let labels: Vec<String> = link.host.split('.').map(str::to_string).collect();
            let label_skeletons: Vec<String> = labels.iter().map(|l| host_skeleton(l)).collect();
            let written_labels: Vec<&str> = if link.written_host == link.host {
                Vec::new()
            } else {
                link.written_host.split('.').collect()
            };
            let written_skeletons: Vec<String> = written_labels
                .iter()
                .map(|l| {
                    unicode_security::skeleton(l)
                        .collect::<String>()
                        .to_lowercase()
                })
                .collect();
            let mut skeletons: Vec<String> = Vec::new();
            for &n in &self.lookalike_lengths {
                for forms in [&labels[..], &label_skeletons[..], &written_skeletons[..]] {
                    skeletons.extend(forms.windows(n).map(|w| w.join(".")));
                }
            }
            skeletons.sort_unstable();
            skeletons.dedup();
            for skeleton in &skeletons {
                let Some(indexes) = self.lookalike_index.get(skeleton) else {
                    continue;
                };
                for rule in indexes.iter().filter_map(|i| self.lookalikes.get(*i)) {
                    let protected = &rule.value;
                    let own = link.host == protected.domain
                        || link
                            .host
                            .strip_suffix(protected.domain.as_str())
                            .is_some_and(|p| p.ends_with('.'));
                    if !own {
                        fire(
                            rule.action,
                            rule.order,
                            format!("lookalike:{}", protected.domain),
                        );
                    }
                }
            }
        }
    }
}

/// Finds up to `max` links (with or without a scheme) in a text, with hosts normalised.
pub fn extract_links(text: &str, max: usize) -> Vec<Link> {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    finder.url_must_have_scheme(false);
    finder
        .links(text)
        .filter_map(|l| parse_link(l.as_str()))
        .take(max)
        .collect()
}

/// Splits a link into host and path. `None` when there is no usable host.
fn parse_link(text: &str) -> Option<Link> {
    let rest = match text.find("://") {
        Some(i) => text.get(i + 3..)?,
        None => text,
    };
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let tail = rest.get(end..)?;
    let host_port = match authority.rfind('@') {
        Some(i) => authority.get(i + 1..)?,
        None => authority,
    };
    let (host, written_host) = if let Some(v6) = host_port.strip_prefix('[') {
        let h = v6.split(']').next()?;
        (h.to_ascii_lowercase(), h.to_string())
    } else {
        let h = host_port.split(':').next()?;
        (normalize_host(h)?, h.trim_end_matches('.').to_string())
    };
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = decode_dots(tail.get(..path_end)?);
    let after = tail.get(path_end..)?;
    let query = match after.strip_prefix('?') {
        Some(q) => q.split('#').next().unwrap_or("").to_string(),
        None => String::new(),
    };
    Some(Link {
        text: text.to_string(),
        host,
        written_host,
        path,
        query,
    })
}

/// Lower-case ASCII (punycode) form of a host name, without a trailing dot.
fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    match idna::domain_to_ascii(host) {
        Ok(ascii) if !ascii.is_empty() => Some(ascii),
        // Not valid IDNA: keep a lower-case form so rules still see something comparable.
        _ => Some(host.to_lowercase()),
    }
}

/// The UTS #39 skeleton of a host's Unicode form: equal skeletons look alike.
fn host_skeleton(ascii_host: &str) -> String {
    let lower = if ascii_host.contains("xn--") {
        idna::domain_to_unicode(ascii_host).0.to_lowercase()
    } else {
        ascii_host.to_lowercase()
    };
    unicode_security::skeleton(&lower)
        .collect::<String>()
        .to_lowercase()
}

/// The host, then each parent domain: `a.b.c`, `b.c`, `c`.
fn host_suffixes(host: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(host), |h| h.split_once('.').map(|(_, rest)| rest))
}

/// The lower-case extension of the last path segment, if it has one.
fn file_extension(path: &str) -> Option<String> {
    let segment = path.trim_end_matches('/').rsplit('/').next()?;
    let (_, ext) = segment.rsplit_once('.')?;
    let ext = ext.trim_end_matches(['.', ' ']);
    if ext.is_empty() {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

/// Decodes `%2e`/`%2E` (a dot) and `%2f`: enough to see an extension hidden by escaping.
fn decode_dots(path: &str) -> String {
    path.replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
}

/// True when the text holds 13 to 19 digits that pass the Luhn check, written together or in
/// groups separated by one space or dash (`4111 1111 1111 1111`, `4111-1111-1111-1111`).
/// Linear in the text, constant memory.
pub fn contains_card_number(text: &str) -> bool {
    // Groups of the current run of digits, newest last; a group longer than 19 digits cannot be
    // part of a card number and ends the run. At most 19 groups can form one number.
    let mut groups: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut pending_sep = false;
    let close_group = |groups: &mut Vec<Vec<u8>>, current: &mut Vec<u8>| -> bool {
        if current.is_empty() {
            return false;
        }
        if current.len() > 19 {
            groups.clear();
            current.clear();
            return false;
        }
        groups.push(std::mem::take(current));
        if groups.len() > 19 {
            groups.remove(0);
        }
        // Every span of groups ending with the newest one.
        let mut number: Vec<u8> = Vec::with_capacity(19);
        for start in (0..groups.len()).rev() {
            let len: usize = groups[start..].iter().map(Vec::len).sum();
            if len > 19 {
                break;
            }
            if len >= 13 {
                number.clear();
                for g in &groups[start..] {
                    number.extend_from_slice(g);
                }
                if luhn(&number) {
                    return true;
                }
            }
        }
        false
    };
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            if current.len() <= 19 {
                current.push(d as u8);
            }
            pending_sep = false;
        } else if (c == ' ' || c == '-') && !current.is_empty() && !pending_sep {
            if close_group(&mut groups, &mut current) {
                return true;
            }
            pending_sep = true;
        } else {
            if close_group(&mut groups, &mut current) {
                return true;
            }
            groups.clear();
            pending_sep = false;
        }
    }
    close_group(&mut groups, &mut current)
}

/// The Luhn checksum over decimal digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Drops a trailing `# comment` (for rule kinds whose arguments cannot contain `#`).
fn strip_comment(s: &str) -> &str {
    match s.find(" #").or_else(|| s.find("\t#")) {
        Some(i) => s[..i].trim(),
        None => {
            if s.trim_start().starts_with('#') {
                ""
            } else {
                s.trim()
            }
        }
    }
}

fn single<'a>(no: usize, what: &str, words: &'a str) -> Result<&'a str, RuleError> {
    let mut it = words.split_whitespace();
    match (it.next(), it.next()) {
        (Some(w), None) => Ok(w),
        (None, _) => Err(err(no, format!("`{what}` needs one argument"))),
        (Some(_), Some(_)) => Err(err(no, format!("`{what}` takes one argument"))),
    }
}
