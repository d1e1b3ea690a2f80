//! Marketing channel attribution: maps a capture's UTM source/medium and HTTP referrer to one
//! of [`CHANNELS`] through an ordered rule table that the admin's config can replace.
//!
//! A rule is one string, so a table fits in a TOML list or a comma-free environment value:
//!
//! ```text
//! <condition> [& <condition> ...] -> <channel>
//! condition := field=alt1|alt2|...      field := source | medium | referrer
//! ```
//!
//! Matching is case-insensitive on trimmed values. An alternative may use `*` as a glob
//! (any run of characters, possibly empty); `none` matches an absent or empty field and `*`
//! alone matches any present value. For `referrer` the value matched is the URL's host
//! (see [`referrer_host`]). All conditions of a rule must hold; the first matching rule wins.
//! Pure: no I/O.

use super::lead::{CHANNELS, Utm};

/// The default table, as rule strings (the config's default value, shown in
/// `leadline.example.toml`). Order matters: explicit UTM mediums first, then well-known UTM
/// sources, then referrer hosts (webmail before search engines, since `mail.google.com`
/// would otherwise count as Google search), then catch-alls.
pub const DEFAULT_CHANNEL_RULES: &[&str] = &[
    "medium=cpc|ppc|paid|paidsearch|paid_search|paid-search|sem|cpa -> paid_search",
    "medium=email|e-mail|newsletter|edm|mail -> email",
    "medium=social|social_media|social-media|sns|paid_social|paid-social -> social",
    "medium=event|events|trade_show|tradeshow|trade-show|offline|conference|expo|booth|qr|qrcode \
     -> event",
    "medium=referral|partner|affiliate|affiliates -> referral",
    "medium=organic|seo -> organic_search",
    "source=facebook*|fb|instagram|ig|linkedin*|twitter|x|t.co|weibo|wechat|weixin|douyin|tiktok\
     |xiaohongshu|xhs|kuaishou|youtube|zhihu|bilibili -> social",
    "source=newsletter|email|edm -> email",
    "source=partner|referral -> referral",
    "referrer=mail.google.com|mail.qq.com|exmail.qq.com|wx.mail.qq.com|outlook.live.com\
     |outlook.office.com|outlook.office365.com|mail.163.com|mail.126.com|mail.yeah.net\
     |mail.sina.com.cn|mail.aliyun.com|qiye.aliyun.com|mail.yahoo.com|*.mail.yahoo.com\
     |mail.yahoo.co.jp|mail.zoho.com|mail.proton.me -> email",
    "referrer=google.*|*.google.*|bing.com|*.bing.com|baidu.com|*.baidu.com|so.com|*.so.com\
     |sogou.com|*.sogou.com|sm.cn|*.sm.cn|yahoo.*|*.yahoo.*|duckduckgo.com|yandex.*|ecosia.org\
     |naver.com|*.naver.com -> organic_search",
    "referrer=facebook.com|*.facebook.com|fb.com|t.co|linkedin.com|*.linkedin.com|lnkd.in\
     |weibo.com|*.weibo.com|weibo.cn|*.weibo.cn|mp.weixin.qq.com|zhihu.com|*.zhihu.com\
     |xiaohongshu.com|*.xiaohongshu.com|xhslink.com|douyin.com|*.douyin.com|bilibili.com\
     |*.bilibili.com|b23.tv|youtube.com|*.youtube.com|youtu.be|instagram.com|x.com|twitter.com\
     |*.twitter.com|tiktok.com|*.tiktok.com -> social",
    "referrer=* -> referral",
    "source=* -> other",
    "medium=* -> other",
];

/// The channel reported when a capture carries no source, medium or referrer at all.
const DIRECT: &str = "direct";

/// One parsed rule: conditions that must all hold, and the channel they assign.
#[derive(Clone)]
pub struct ChannelRule {
    /// The rule as written (trimmed), shown by `Debug`.
    text: String,
    conditions: Vec<Condition>,
    channel: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Source,
    Medium,
    Referrer,
}

#[derive(Debug, Clone)]
struct Condition {
    field: Field,
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone)]
enum Alternative {
    /// `none`: the field is absent or empty.
    Absent,
    /// A lowercase pattern, `*` matching any run of characters; never matches an absent field.
    Glob(String),
}

/// The normalized signals of one capture: lowercase, trimmed, empty as `None`.
struct Signals {
    source: Option<String>,
    medium: Option<String>,
    referrer: Option<String>,
}

impl ChannelRule {
    /// Parses one rule such as `medium=cpc|ppc & source=google* -> paid_search`.
    pub fn parse(rule: &str) -> Result<ChannelRule, String> {
        let text = rule.trim();
        if text.is_empty() {
            return Err("empty rule; expected \"<field>=<values> -> <channel>\"".to_string());
        }
        let Some((lhs, rhs)) = text.split_once("->") else {
            return Err(format!(
                "missing \"->\" in rule \"{text}\"; expected \"<field>=<values> -> <channel>\""
            ));
        };
        if rhs.contains("->") {
            return Err(format!("more than one \"->\" in rule \"{text}\""));
        }
        let wanted = rhs.trim().to_lowercase();
        let Some(channel) = CHANNELS.iter().copied().find(|c| *c == wanted) else {
            return Err(format!(
                "unknown channel \"{}\" in rule \"{text}\"; use one of {}",
                rhs.trim(),
                CHANNELS.join(", ")
            ));
        };
        if lhs.trim().is_empty() {
            return Err(format!("no condition before \"->\" in rule \"{text}\""));
        }
        let conditions = lhs
            .split('&')
            .map(|c| parse_condition(c, text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChannelRule {
            text: text.to_string(),
            conditions,
            channel,
        })
    }

    /// The channel this rule assigns; always one of [`CHANNELS`].
    pub fn channel(&self) -> &str {
        self.channel
    }

    fn matches(&self, signals: &Signals) -> bool {
        self.conditions.iter().all(|c| c.matches(signals))
    }
}

impl std::fmt::Debug for ChannelRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ChannelRule").field(&self.text).finish()
    }
}

fn parse_condition(raw: &str, rule: &str) -> Result<Condition, String> {
    let cond = raw.trim();
    if cond.is_empty() {
        return Err(format!("empty condition in rule \"{rule}\""));
    }
    let Some((field, values)) = cond.split_once('=') else {
        return Err(format!(
            "condition \"{cond}\" in rule \"{rule}\" has no \"=\"; expected <field>=<values>"
        ));
    };
    let field = match field.trim().to_lowercase().as_str() {
        "source" => Field::Source,
        "medium" => Field::Medium,
        "referrer" => Field::Referrer,
        _ => {
            return Err(format!(
                "unknown field \"{}\" in rule \"{rule}\"; use source, medium or referrer",
                field.trim()
            ));
        }
    };
    let alternatives = values
        .split('|')
        .map(|alt| {
            let alt = alt.trim().to_lowercase();
            if alt.is_empty() {
                Err(format!(
                    "empty alternative in condition \"{cond}\" in rule \"{rule}\""
                ))
            } else if alt == "none" {
                Ok(Alternative::Absent)
            } else {
                Ok(Alternative::Glob(alt))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Condition {
        field,
        alternatives,
    })
}

impl Condition {
    fn matches(&self, signals: &Signals) -> bool {
        let value = match self.field {
            Field::Source => signals.source.as_deref(),
            Field::Medium => signals.medium.as_deref(),
            Field::Referrer => signals.referrer.as_deref(),
        };
        self.alternatives.iter().any(|alt| match (alt, value) {
            (Alternative::Absent, None) => true,
            (Alternative::Glob(pattern), Some(value)) => glob_match(pattern, value),
            _ => false,
        })
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle_and_last: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle_and_last.split_last() else {
        // No `*` at all: the whole text must equal the pattern.
        return rest.is_empty();
    };
    let mut rest = rest;
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Parses a whole table; the error names the first bad rule with its 1-based position.
pub fn parse_rules(rules: &[String]) -> Result<Vec<ChannelRule>, String> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| ChannelRule::parse(rule).map_err(|e| format!("rule {}: {e}", i + 1)))
        .collect()
}

/// The channel for this capture: the first matching rule's channel; `"direct"` when there is
/// no UTM source, no UTM medium and no referrer; `None` only if some signal is present but no
/// rule matched (the default table ends with catch-alls so that does not happen with it).
pub fn channel_for(rules: &[ChannelRule], utm: &Utm, referrer: Option<&str>) -> Option<String> {
    let signals = signals(utm, referrer);
    if signals.source.is_none() && signals.medium.is_none() && signals.referrer.is_none() {
        return Some(DIRECT.to_string());
    }
    first_match(rules, &signals).map(|i| rules[i].channel.to_string())
}

fn first_match(rules: &[ChannelRule], signals: &Signals) -> Option<usize> {
    rules.iter().position(|r| r.matches(signals))
}

fn signals(utm: &Utm, referrer: Option<&str>) -> Signals {
    Signals {
        source: normalize(utm.source.as_deref()),
        medium: normalize(utm.medium.as_deref()),
        referrer: referrer.and_then(referrer_host),
    }
}

fn normalize(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    (!value.is_empty()).then(|| value.to_lowercase())
}

/// The referrer's host as used in matching: lowercase, without port, trailing dot or a leading
/// `www.`. `None` when the referrer is empty or not an absolute http(s) URL with a host.
pub fn referrer_host(referrer: &str) -> Option<String> {
    let url = url::Url::parse(referrer.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?.to_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let host = host.strip_prefix("www.").unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

/// Whether `referrer` is one of the business's own pages: its host is the host of `page` (the
/// page the form was on) or of one of `own_origins` (the sites a form is embedded in). A
/// visitor who clicked from the site's home page to its contact form was not referred by
/// anyone; such a referrer says nothing of the channel.
pub fn is_own_site(referrer: &str, page: Option<&str>, own_origins: &[String]) -> bool {
    let Some(host) = referrer_host(referrer) else {
        return false;
    };
    page.into_iter()
        .chain(own_origins.iter().map(String::as_str))
        .filter_map(referrer_host)
        .any(|own| own == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_referrer_from_the_business_s_own_site_is_its_own() {
        let origins = ["https://shop.acme.example".to_owned()];
        let page = Some("https://www.acme.example/contact");
        assert!(
            is_own_site("https://acme.example/", page, &origins),
            "the form's own site"
        );
        assert!(
            is_own_site("https://shop.acme.example/cart", None, &origins),
            "a site the form is embedded in"
        );
        assert!(!is_own_site(
            "https://partner.example/deals",
            page,
            &origins
        ));
        assert!(!is_own_site("not a url", page, &origins));
        assert!(!is_own_site("https://acme.example/", None, &[]));
    }

    fn defaults() -> Vec<ChannelRule> {
        let rules: Vec<String> = DEFAULT_CHANNEL_RULES
            .iter()
            .map(|r| r.to_string())
            .collect();
        parse_rules(&rules).expect("default rules parse")
    }

    fn utm(source: Option<&str>, medium: Option<&str>) -> Utm {
        Utm {
            source: source.map(str::to_string),
            medium: medium.map(str::to_string),
            ..Utm::default()
        }
    }

    fn channel(source: Option<&str>, medium: Option<&str>, referrer: Option<&str>) -> String {
        channel_for(&defaults(), &utm(source, medium), referrer).expect("defaults always match")
    }

    fn rule(text: &str) -> ChannelRule {
        ChannelRule::parse(text).expect("rule parses")
    }

    fn parse_err(text: &str) -> String {
        ChannelRule::parse(text).expect_err("rule should not parse")
    }

    #[test]
    fn default_rules_all_parse_and_name_known_channels() {
        let rules = defaults();
        assert_eq!(rules.len(), DEFAULT_CHANNEL_RULES.len());
        assert!(rules.iter().all(|r| CHANNELS.contains(&r.channel())));
    }

    /// (source, medium, referrer, 0-based index of the rule expected to fire, channel)
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        usize,
        &'static str,
    );

    #[test]
    fn every_default_rule_fires_for_a_representative_input() {
        let rules = defaults();
        let cases: &[Case] = &[
            (Some("baidu"), Some("cpc"), None, 0, "paid_search"),
            (None, Some("newsletter"), None, 1, "email"),
            (Some("wechat"), Some("sns"), None, 2, "social"),
            (Some("canton_fair"), Some("qrcode"), None, 3, "event"),
            (Some("acme"), Some("affiliate"), None, 4, "referral"),
            (Some("google"), Some("organic"), None, 5, "organic_search"),
            (Some("xiaohongshu"), None, None, 6, "social"),
            (Some("edm"), None, None, 7, "email"),
            (Some("partner"), None, None, 8, "referral"),
            (
                None,
                None,
                Some("https://mail.qq.com/cgi-bin/frame_html"),
                9,
                "email",
            ),
            (
                None,
                None,
                Some("https://www.bing.com/search?q=crm"),
                10,
                "organic_search",
            ),
            (
                None,
                None,
                Some("https://www.zhihu.com/question/1"),
                11,
                "social",
            ),
            (
                None,
                None,
                Some("https://blog.example.org/post"),
                12,
                "referral",
            ),
            (Some("spring_flyer"), None, None, 13, "other"),
            (None, Some("print"), None, 14, "other"),
        ];
        let mut fired = vec![false; rules.len()];
        for &(source, medium, referrer, index, expected) in cases {
            let signals = signals(&utm(source, medium), referrer);
            let got = first_match(&rules, &signals);
            assert_eq!(got, Some(index), "{source:?} {medium:?} {referrer:?}");
            assert_eq!(rules[index].channel(), expected);
            assert_eq!(
                channel_for(&rules, &utm(source, medium), referrer).as_deref(),
                Some(expected)
            );
            fired[index] = true;
        }
        assert!(fired.iter().all(|f| *f), "some default rule never fired");
    }

    #[test]
    fn nothing_present_is_direct_even_without_rules() {
        assert_eq!(channel(None, None, None), "direct");
        assert_eq!(channel(Some("  "), Some(""), Some("")), "direct");
        assert_eq!(
            channel_for(&[], &Utm::default(), None).as_deref(),
            Some("direct")
        );
        // A campaign alone is not a source, medium or referrer.
        let only_campaign = Utm {
            campaign: Some("spring".into()),
            ..Utm::default()
        };
        assert_eq!(
            channel_for(&defaults(), &only_campaign, None).as_deref(),
            Some("direct")
        );
    }

    #[test]
    fn unparseable_referrer_counts_as_absent() {
        assert_eq!(channel(None, None, Some("not a url")), "direct");
        assert_eq!(channel(None, None, Some("www.google.com")), "direct");
        assert_eq!(
            channel(None, None, Some("android-app://com.google/")),
            "direct"
        );
        assert_eq!(
            channel(Some("foo"), None, Some("ftp://google.com/")),
            "other"
        );
    }

    #[test]
    fn some_signal_but_no_matching_rule_is_none() {
        let rules = vec![rule("medium=cpc -> paid_search")];
        assert_eq!(channel_for(&rules, &utm(Some("x"), None), None), None);
    }

    #[test]
    fn paid_medium_beats_search_referrer() {
        assert_eq!(
            channel(Some("google"), Some("cpc"), Some("https://www.google.com/")),
            "paid_search"
        );
    }

    #[test]
    fn referrer_hosts_map_as_expected() {
        assert_eq!(
            channel(None, None, Some("https://mail.google.com/mail/u/0/")),
            "email"
        );
        assert_eq!(
            channel(None, None, Some("https://www.google.com.hk/")),
            "organic_search"
        );
        assert_eq!(
            channel(None, None, Some("https://www.baidu.com/s?wd=x")),
            "organic_search"
        );
        assert_eq!(
            channel(None, None, Some("https://m.baidu.com/")),
            "organic_search"
        );
        assert_eq!(
            channel(None, None, Some("https://google.de/")),
            "organic_search"
        );
        assert_eq!(
            channel(None, None, Some("https://l.facebook.com/l.php")),
            "social"
        );
        assert_eq!(channel(None, None, Some("https://t.co/abc")), "social");
        assert_eq!(
            channel(None, None, Some("https://mp.weixin.qq.com/s/abc")),
            "social"
        );
        assert_eq!(
            channel(None, None, Some("https://some-blog.cn/x")),
            "referral"
        );
    }

    #[test]
    fn unknown_source_alone_is_other() {
        assert_eq!(channel(Some("flyer"), None, None), "other");
        assert_eq!(channel(None, Some("banner"), None), "other");
    }

    #[test]
    fn matching_is_case_insensitive_and_trimmed() {
        assert_eq!(channel(None, Some("  CPC "), None), "paid_search");
        assert_eq!(channel(Some("WeChat"), None, None), "social");
        assert_eq!(
            channel(None, None, Some("HTTPS://WWW.Google.COM/search")),
            "organic_search"
        );
        let r = rule("  SOURCE = Acme | Beta  ->  Referral ");
        assert_eq!(r.channel(), "referral");
        let rules = vec![r];
        assert_eq!(
            channel_for(&rules, &utm(Some("beta"), None), None).as_deref(),
            Some("referral")
        );
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob_match("*.google.*", "news.google.co.uk"));
        assert!(!glob_match("*.google.*", "google.com"));
        assert!(glob_match("google.*", "google.com"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("facebook", "facebook"));
        assert!(!glob_match("facebook", "facebooks"));
        assert!(glob_match("**", ""));
        assert_eq!(channel(Some("facebook_ads"), None, None), "social");
        assert_eq!(channel(Some("linkedin.com"), None, None), "social");
    }

    #[test]
    fn star_matches_only_present_values() {
        let rules = vec![
            rule("source=* & medium=none -> other"),
            rule("medium=* -> email"),
        ];
        assert_eq!(
            channel_for(&rules, &utm(Some("a"), None), None).as_deref(),
            Some("other")
        );
        assert_eq!(
            channel_for(&rules, &utm(Some("a"), Some("b")), None).as_deref(),
            Some("email")
        );
        assert_eq!(
            channel_for(&rules, &utm(None, None), Some("https://x.io/")),
            None
        );
    }

    #[test]
    fn none_matches_absent_or_empty() {
        let rules = vec![rule("referrer=none & source=flyer|none -> event")];
        assert_eq!(
            channel_for(&rules, &utm(Some("flyer"), Some("x")), None).as_deref(),
            Some("event")
        );
        assert_eq!(
            channel_for(&rules, &utm(Some(" "), Some("x")), Some("garbage")).as_deref(),
            Some("event")
        );
        assert_eq!(
            channel_for(&rules, &utm(Some("flyer"), None), Some("https://a.com/")),
            None
        );
        // The literal value "none" is a present value, not an absent one.
        assert_eq!(
            channel_for(&rules, &utm(Some("none"), Some("x")), None),
            None
        );
    }

    #[test]
    fn all_conditions_must_hold_and_first_rule_wins() {
        let rules = vec![
            rule("source=google & medium=cpc -> paid_search"),
            rule("source=google -> organic_search"),
            rule("source=google -> other"),
        ];
        assert_eq!(
            channel_for(&rules, &utm(Some("google"), Some("cpc")), None).as_deref(),
            Some("paid_search")
        );
        assert_eq!(
            channel_for(&rules, &utm(Some("google"), Some("display")), None).as_deref(),
            Some("organic_search")
        );
    }

    #[test]
    fn referrer_host_normalizes() {
        assert_eq!(
            referrer_host("https://WWW.Example.COM:8443/a?b#c").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            referrer_host("http://user:pw@shop.example.cn./").as_deref(),
            Some("shop.example.cn")
        );
        assert_eq!(
            referrer_host(" https://www.google.com.hk ").as_deref(),
            Some("google.com.hk")
        );
        assert_eq!(
            referrer_host("http://[::1]:8080/").as_deref(),
            Some("[::1]")
        );
        assert_eq!(referrer_host(""), None);
        assert_eq!(referrer_host("/relative/path"), None);
        assert_eq!(referrer_host("mailto:a@b.com"), None);
        assert_eq!(referrer_host("file:///etc/passwd"), None);
    }

    #[test]
    fn parse_rejects_unknown_field() {
        let err = parse_err("medum=cpc -> paid_search");
        assert_eq!(
            err,
            "unknown field \"medum\" in rule \"medum=cpc -> paid_search\"; \
             use source, medium or referrer"
        );
    }

    #[test]
    fn parse_rejects_unknown_channel() {
        let err = parse_err("medium=cpc -> paid");
        assert!(err.contains("unknown channel \"paid\""), "{err}");
        assert!(err.contains("\"medium=cpc -> paid\""), "{err}");
        assert!(err.contains("paid_search"), "{err}");
    }

    #[test]
    fn parse_rejects_missing_arrow() {
        let err = parse_err("medium=cpc paid_search");
        assert!(err.contains("missing \"->\""), "{err}");
        assert!(err.contains("\"medium=cpc paid_search\""), "{err}");
        assert!(parse_err("medium=cpc -> email -> social").contains("more than one"));
    }

    #[test]
    fn parse_rejects_empty_alternative() {
        let err = parse_err("source=a||b -> other");
        assert!(err.contains("empty alternative"), "{err}");
        assert!(err.contains("\"source=a||b -> other\""), "{err}");
        assert!(parse_err("source= -> other").contains("empty alternative"));
    }

    #[test]
    fn parse_rejects_other_malformed_rules() {
        assert!(parse_err("").contains("empty rule"));
        assert!(parse_err(" -> other").contains("no condition"));
        assert!(parse_err("source=a & -> other").contains("empty condition"));
        assert!(parse_err("source -> other").contains("has no \"=\""));
    }

    #[test]
    fn parse_rules_names_the_first_bad_rule_by_position() {
        let rules = vec![
            "medium=cpc -> paid_search".to_string(),
            "medum=seo -> organic_search".to_string(),
            "bogus".to_string(),
        ];
        let err = parse_rules(&rules).expect_err("second rule is bad");
        assert!(err.starts_with("rule 2: unknown field \"medum\""), "{err}");
        assert_eq!(parse_rules(&[]).map(|r| r.len()), Ok(0));
    }
}
