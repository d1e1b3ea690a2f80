//! The hosted web-form page served at `GET /f/{key}`: one self-contained, mobile-friendly
//! HTML page (inline CSS, no script, no external assets), re-rendered with the submitted
//! values and errors when a urlencoded submit fails validation, plus the thank-you page for
//! a successful HTML submit without a redirect URL. Pure rendering: no I/O, no state.
//!
//! The template is `assets/form.html`, compiled into the binary and parsed once. It is
//! auto-escaped as HTML, so everything a form owner or a visitor supplied (title, labels,
//! values, hidden values, errors, even the language tag and the action) comes out escaped.
//! The chrome's own texts ([`UiText`]) follow the form's language.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use std::sync::LazyLock;

/// One input on the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldView<'a> {
    /// The input's `name`, as posted back.
    pub name: &'a str,
    /// The visible label, in the form's language.
    pub label: &'a str,
    /// Marked with `*` and the `required` attribute.
    pub required: bool,
    pub kind: FieldKind,
    /// Pre-filled value (empty on first render; the submitted value on a re-render).
    pub value: &'a str,
    /// Shown in red under the input, which gets `aria-invalid` and `aria-describedby`.
    pub error: Option<&'a str>,
}

/// What kind of control a field renders as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Email,
    Tel,
    Textarea,
}

impl FieldKind {
    /// From a field name: email→Email, phone/mobile/tel→Tel,
    /// message/notes/comment/inquiry→Textarea, else Text.
    ///
    /// The name is split into words (`work_email`, `mobile-phone`, `phoneNumber`), so a
    /// word anywhere in it counts, but `hotel` is not a `tel`.
    pub fn for_field(name: &str) -> FieldKind {
        let words = words(name);
        let has = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
        if has(&["email", "mail"]) {
            FieldKind::Email
        } else if has(&["phone", "mobile", "tel", "telephone", "cell", "cellphone"]) {
            FieldKind::Tel
        } else if has(&[
            "message", "messages", "note", "notes", "comment", "comments", "inquiry", "enquiry",
        ]) {
            FieldKind::Textarea
        } else {
            FieldKind::Text
        }
    }

    /// The `type` attribute of the `<input>` (the template renders `textarea` as its own tag).
    fn as_str(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Email => "email",
            FieldKind::Tel => "tel",
            FieldKind::Textarea => "textarea",
        }
    }
}

/// The whole page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormPage<'a> {
    /// The form's name: the `<title>` and the heading.
    pub title: &'a str,
    /// BCP 47 tag, e.g. "en", "zh-CN"; goes into `<html lang>` and picks the [`UiText`].
    pub language: &'a str,
    /// Where the form posts (the page's own `/f/{key}` path).
    pub action: &'a str,
    pub fields: Vec<FieldView<'a>>,
    /// Hidden inputs: the server-signed `_ts` render token, `utm_*` copied from the page
    /// URL, etc.
    pub hidden: Vec<(&'a str, &'a str)>,
    /// A message above the form. When it is `None` but a field has an error, the
    /// language's [`UiText::fix_errors`] is shown instead.
    pub error: Option<&'a str>,
}

/// Texts of the page chrome in one language.
#[derive(Debug, PartialEq, Eq)]
pub struct UiText {
    pub submit: &'static str,
    pub required: &'static str,
    pub fix_errors: &'static str,
    pub thank_you_title: &'static str,
    pub thank_you_body: &'static str,
    pub field_required: &'static str,
    pub invalid_email: &'static str,
    pub invalid_phone: &'static str,
}

static ENGLISH: UiText = UiText {
    submit: "Submit",
    required: "Required",
    fix_errors: "Please correct the fields marked below.",
    thank_you_title: "Thank you!",
    thank_you_body: "We have received your details and will be in touch soon.",
    field_required: "This field is required.",
    invalid_email: "Please enter a valid email address.",
    invalid_phone: "Please enter a valid phone number.",
};

static SIMPLIFIED_CHINESE: UiText = UiText {
    submit: "提交",
    required: "必填",
    fix_errors: "请更正下方标出的字段。",
    thank_you_title: "谢谢！",
    thank_you_body: "我们已收到您的信息，会尽快与您联系。",
    field_required: "此项为必填项。",
    invalid_email: "请输入有效的邮箱地址。",
    invalid_phone: "请输入有效的电话号码。",
};

impl UiText {
    /// Picks by primary subtag: "zh*" → Simplified Chinese, anything else → English.
    pub fn for_language(lang: &str) -> &'static UiText {
        let primary = lang.split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("zh") {
            &SIMPLIFIED_CHINESE
        } else {
            &ENGLISH
        }
    }
}

/// Rendering failed; a bug in the template, never in the data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormPageError {
    #[error("form page template: {0}")]
    Template(String),
}

/// The form page, with values pre-filled and errors next to their fields.
pub fn render_form(page: &FormPage<'_>) -> Result<String, FormPageError> {
    let ui = UiText::for_language(page.language);
    let first_error = page.fields.iter().position(|f| field_error(f).is_some());
    let error = page
        .error
        .filter(|e| !e.is_empty())
        .or(first_error.map(|_| ui.fix_errors));
    let ctx = FormContext {
        page: "form",
        title: page.title,
        language: page.language,
        action: page.action,
        error,
        any_required: page.fields.iter().any(|f| f.required),
        required: ui.required,
        submit: ui.submit,
        hidden: page
            .hidden
            .iter()
            .map(|&(name, value)| HiddenContext { name, value })
            .collect(),
        fields: page
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| FieldContext {
                id: format!("f-{}", f.name),
                name: f.name,
                label: f.label,
                required: f.required,
                kind: f.kind.as_str(),
                value: f.value,
                error: field_error(f),
                autocomplete: autocomplete_for(f.name, f.kind),
                autofocus: first_error == Some(i),
            })
            .collect(),
    };
    render(&ctx)
}

/// The page shown after a successful HTML submit when the form has no redirect URL.
pub fn render_thank_you(title: &str, language: &str) -> Result<String, FormPageError> {
    let ui = UiText::for_language(language);
    render(&ThanksContext {
        page: "thanks",
        title,
        language,
        thank_you_title: ui.thank_you_title,
        thank_you_body: ui.thank_you_body,
    })
}

const TEMPLATE: &str = "form.html";

/// Parsed once. The `.html` name turns on HTML auto-escaping.
static TEMPLATES: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template(TEMPLATE, include_str!("../../assets/form.html"))
        .map_err(|e| format!("{e:#}"))?;
    Ok(env)
});

fn render(ctx: &impl Serialize) -> Result<String, FormPageError> {
    let env = TEMPLATES
        .as_ref()
        .map_err(|e| FormPageError::Template(e.clone()))?;
    env.get_template(TEMPLATE)
        .and_then(|t| t.render(ctx))
        .map_err(|e| FormPageError::Template(format!("{e:#}")))
}

#[derive(Serialize)]
struct FormContext<'a> {
    page: &'static str,
    title: &'a str,
    language: &'a str,
    action: &'a str,
    error: Option<&'a str>,
    any_required: bool,
    required: &'static str,
    submit: &'static str,
    hidden: Vec<HiddenContext<'a>>,
    fields: Vec<FieldContext<'a>>,
}

#[derive(Serialize)]
struct HiddenContext<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct FieldContext<'a> {
    id: String,
    name: &'a str,
    label: &'a str,
    required: bool,
    kind: &'static str,
    value: &'a str,
    error: Option<&'a str>,
    autocomplete: Option<&'static str>,
    autofocus: bool,
}

#[derive(Serialize)]
struct ThanksContext<'a> {
    page: &'static str,
    title: &'a str,
    language: &'a str,
    thank_you_title: &'static str,
    thank_you_body: &'static str,
}

/// An empty error message counts as none.
fn field_error<'a>(f: &FieldView<'a>) -> Option<&'a str> {
    f.error.filter(|e| !e.is_empty())
}

/// The `autocomplete` hint for a field, so phones offer the visitor's saved details.
fn autocomplete_for(name: &str, kind: FieldKind) -> Option<&'static str> {
    match kind {
        FieldKind::Email => return Some("email"),
        FieldKind::Tel => return Some("tel"),
        FieldKind::Textarea => return None,
        FieldKind::Text => {}
    }
    let joined = words(name).join("_");
    Some(match joined.as_str() {
        "name" | "full_name" | "fullname" | "contact_name" | "your_name" => "name",
        "first_name" | "firstname" | "given_name" => "given-name",
        "last_name" | "lastname" | "family_name" | "surname" => "family-name",
        "company" | "company_name" | "organization" | "organisation" | "org" => "organization",
        "title" | "job_title" | "jobtitle" | "position" | "job" | "role" => "organization-title",
        "country" => "country-name",
        _ => return None,
    })
}

/// Lower-case words of a field name: split at non-alphanumerics and camelCase humps.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert(\"x\")</script>";

    fn field<'a>(name: &'a str, label: &'a str, required: bool) -> FieldView<'a> {
        FieldView {
            name,
            label,
            required,
            kind: FieldKind::for_field(name),
            value: "",
            error: None,
        }
    }

    fn english<'a>() -> FormPage<'a> {
        FormPage {
            title: "Trade Show 2025",
            language: "en",
            action: "/f/abc123",
            fields: vec![
                field("name", "Name", true),
                field("email", "Email", true),
                field("phone", "Phone", false),
                field("company", "Company", false),
                field("job_title", "Job title", false),
                field("message", "Message", false),
            ],
            hidden: vec![("_ts", "1700000000.sig"), ("utm_source", "expo")],
            error: None,
        }
    }

    fn chinese<'a>() -> FormPage<'a> {
        FormPage {
            title: "展会登记",
            language: "zh-CN",
            action: "/f/zh1",
            fields: vec![
                field("name", "姓名", true),
                field("email", "邮箱", true),
                field("company", "公司", false),
            ],
            hidden: vec![("_ts", "tok")],
            error: None,
        }
    }

    /// The tag (from `<` to `>`) that contains `needle`.
    fn tag_with<'h>(html: &'h str, needle: &str) -> &'h str {
        let at = html
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in {html}"));
        let start = html[..at].rfind('<').expect("tag start");
        let end = at + html[at..].find('>').expect("tag end");
        &html[start..=end]
    }

    #[test]
    fn english_page_has_the_chrome() {
        let html = render_form(&english()).unwrap();
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.contains(r#"<html lang="en">"#));
        assert!(html.contains(r#"<meta charset="utf-8">"#));
        assert!(
            html.contains(
                r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#
            )
        );
        assert!(html.contains("<title>Trade Show 2025</title>"));
        assert!(html.contains("<h1>Trade Show 2025</h1>"));
        assert!(html.contains("<style>"));
        for font in ["PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC"] {
            assert!(html.contains(font), "{font}");
        }
        assert!(html.contains("max-width: 32rem"));
        assert!(html.contains("font-size: 16px"));
        assert!(html.contains(":focus"));
        // nothing from outside
        for external in ["<script", "<link", "http://", "https://", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
        // all blocks closed and rendered; no template syntax left over
        assert!(!html.contains("{{") && !html.contains("{%"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(html.contains(r#"<button type="submit">Submit</button>"#));
    }

    #[test]
    fn english_form_posts_to_its_action() {
        let html = render_form(&english()).unwrap();
        // minijinja escapes `/` too; browsers decode it in attributes.
        assert!(
            html.contains(
                r#"<form method="post" action="&#x2f;f&#x2f;abc123" accept-charset="utf-8">"#
            ),
            "{html}"
        );
        assert_eq!(html.matches("<form").count(), 1);
        assert!(html.contains("</form>"));
    }

    #[test]
    fn labels_are_bound_and_required_fields_marked() {
        let html = render_form(&english()).unwrap();
        assert!(html.contains(
            r#"<label for="f-name">Name <span class="req" aria-hidden="true">*</span></label>"#
        ));
        assert!(html.contains(r#"<label for="f-phone">Phone</label>"#));
        assert!(tag_with(&html, r#"id="f-name""#).contains(" required"));
        assert!(tag_with(&html, r#"id="f-email""#).contains(" required"));
        assert!(!tag_with(&html, r#"id="f-phone""#).contains("required"));
        assert!(html.contains(r#"<span class="req" aria-hidden="true">*</span> Required"#));
    }

    #[test]
    fn input_types_and_autocomplete_follow_the_field_kind() {
        let html = render_form(&english()).unwrap();
        let name = tag_with(&html, r#"id="f-name""#);
        assert!(name.starts_with(r#"<input type="text""#), "{name}");
        assert!(name.contains(r#"autocomplete="name""#));
        let email = tag_with(&html, r#"id="f-email""#);
        assert!(email.starts_with(r#"<input type="email""#), "{email}");
        assert!(email.contains(r#"autocomplete="email""#));
        let phone = tag_with(&html, r#"id="f-phone""#);
        assert!(phone.starts_with(r#"<input type="tel""#), "{phone}");
        assert!(phone.contains(r#"autocomplete="tel""#));
        let company = tag_with(&html, r#"id="f-company""#);
        assert!(company.contains(r#"autocomplete="organization""#));
        let title = tag_with(&html, r#"id="f-job_title""#);
        assert!(title.contains(r#"autocomplete="organization-title""#));
        let message = tag_with(&html, r#"id="f-message""#);
        assert!(message.starts_with("<textarea"), "{message}");
        assert!(!message.contains("autocomplete"));
        assert!(html.contains("</textarea>"));
    }

    #[test]
    fn values_are_prefilled() {
        let mut page = english();
        page.fields[0].value = "Ada Lovelace";
        page.fields[1].value = "ada@example.com";
        page.fields[5].value = "Call me\nafter 5";
        let html = render_form(&page).unwrap();
        assert!(tag_with(&html, r#"id="f-name""#).contains(r#"value="Ada Lovelace""#));
        assert!(tag_with(&html, r#"id="f-email""#).contains(r#"value="ada@example.com""#));
        assert!(tag_with(&html, r#"id="f-phone""#).contains(r#"value="""#));
        // the newline after the tag is eaten by the HTML parser, so the value keeps its own
        assert!(html.contains(">\nCall me\nafter 5</textarea>"), "{html}");
    }

    #[test]
    fn hidden_inputs_and_honeypot_are_present() {
        let html = render_form(&english()).unwrap();
        assert!(html.contains(r#"<input type="hidden" name="_ts" value="1700000000.sig">"#));
        assert!(html.contains(r#"<input type="hidden" name="utm_source" value="expo">"#));
        let hp = tag_with(&html, r#"name="_hp""#);
        assert!(hp.starts_with(r#"<input type="text""#), "{hp}");
        assert!(hp.contains(r#"value="""#));
        assert!(hp.contains(r#"tabindex="-1""#));
        assert!(hp.contains(r#"autocomplete="off""#));
        assert!(hp.contains(r#"aria-hidden="true""#));
        assert!(!hp.contains("required"));
        assert!(html.contains(r#"<div class="hp" aria-hidden="true">"#));
        assert!(html.contains(".hp { position: absolute; left: -10000px;"));
        // inside the form, so it is posted
        let form = &html[html.find("<form").unwrap()..html.find("</form>").unwrap()];
        assert!(form.contains(r#"name="_hp""#) && form.contains(r#"name="_ts""#));
    }

    #[test]
    fn errors_sit_next_to_their_fields_with_aria() {
        let mut page = english();
        page.fields[1].value = "not-an-email";
        page.fields[1].error = Some(UiText::for_language("en").invalid_email);
        page.fields[0].error = Some("");
        let html = render_form(&page).unwrap();
        let email = tag_with(&html, r#"id="f-email""#);
        assert!(email.contains(r#"aria-invalid="true""#), "{email}");
        assert!(email.contains(r#"aria-describedby="f-email-error""#));
        assert!(email.contains(" autofocus"));
        assert!(email.contains(r#"value="not-an-email""#));
        let msg = r#"<p class="error" id="f-email-error">Please enter a valid email address.</p>"#;
        assert!(html.contains(msg), "{html}");
        // right after its input, before the next field
        let input_at = html.find(r#"id="f-email""#).unwrap();
        let error_at = html.find(msg).unwrap();
        let next_at = html.find(r#"id="f-phone""#).unwrap();
        assert!(input_at < error_at && error_at < next_at);
        // fields without an error (an empty one counts as none) are left alone
        let name = tag_with(&html, r#"id="f-name""#);
        assert!(!name.contains("aria-invalid") && !name.contains("aria-describedby"));
        assert_eq!(html.matches(r#"class="error""#).count(), 1);
        // a summary above the form, from UiText when the caller gave none
        assert!(html.contains(
            r#"<p class="alert" role="alert" id="form-error">Please correct the fields marked below.</p>"#
        ));
        assert!(html.contains(r#"aria-describedby="form-error""#));
    }

    #[test]
    fn page_error_is_shown_above_the_form() {
        let mut page = english();
        page.error = Some("Please correct the fields below");
        let html = render_form(&page).unwrap();
        let at = html.find("Please correct the fields below").unwrap();
        assert!(at < html.find("<form").unwrap());
        // no error anywhere: no alert at all
        let html = render_form(&english()).unwrap();
        assert!(!html.contains("role=\"alert\"") && !html.contains(" aria-invalid="));
        assert!(!html.contains("autofocus"));
    }

    #[test]
    fn chinese_page() {
        let mut page = chinese();
        page.fields[0].value = "张三";
        page.fields[1].error = Some(UiText::for_language("zh-CN").field_required);
        let html = render_form(&page).unwrap();
        assert!(html.contains(r#"<html lang="zh-CN">"#));
        assert!(html.contains("<title>展会登记</title>"));
        assert!(html.contains(
            r#"<label for="f-name">姓名 <span class="req" aria-hidden="true">*</span></label>"#
        ));
        assert!(html.contains(
            r#"<label for="f-email">邮箱 <span class="req" aria-hidden="true">*</span></label>"#
        ));
        assert!(html.contains(r#"<label for="f-company">公司</label>"#));
        assert!(html.contains(r#"<button type="submit">提交</button>"#));
        assert!(html.contains("> 必填</p>"));
        assert!(tag_with(&html, r#"id="f-name""#).contains(r#"value="张三""#));
        assert!(tag_with(&html, r#"id="f-email""#).starts_with(r#"<input type="email""#));
        assert!(html.contains(r#"<p class="error" id="f-email-error">此项为必填项。</p>"#));
        assert!(html.contains("请更正下方标出的字段。"));
        assert!(html.contains(r#"<input type="hidden" name="_ts" value="tok">"#));
        assert!(html.contains(r#"name="_hp""#));
        assert!(!html.contains("Submit"));
    }

    #[test]
    fn hostile_strings_are_escaped_in_every_slot() {
        let page = FormPage {
            title: HOSTILE,
            language: HOSTILE,
            action: HOSTILE,
            fields: vec![
                FieldView {
                    name: HOSTILE,
                    label: HOSTILE,
                    required: true,
                    kind: FieldKind::Text,
                    value: HOSTILE,
                    error: Some(HOSTILE),
                },
                FieldView {
                    name: "notes",
                    label: HOSTILE,
                    required: false,
                    kind: FieldKind::Textarea,
                    value: "</textarea><script>x</script>",
                    error: None,
                },
            ],
            hidden: vec![(HOSTILE, HOSTILE)],
            error: Some(HOSTILE),
        };
        let html = render_form(&page).unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert(\""));
        assert_eq!(html.matches("</textarea>").count(), 1);
        let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2f;script&gt;";
        // title ×2, lang, action, name, id ×3 (label for, input id, describedby), error id,
        // label ×2, value, field error, hidden name and value, page error
        assert!(html.matches(escaped).count() >= 15, "{html}");
        assert!(html.contains("&lt;&#x2f;textarea&gt;&lt;script&gt;x"));

        let thanks = render_thank_you(HOSTILE, HOSTILE).unwrap();
        assert!(!thanks.contains("<script"), "{thanks}");
        assert_eq!(thanks.matches(escaped).count(), 3);
    }

    #[test]
    fn thank_you_page() {
        let html = render_thank_you("Trade Show 2025", "en-US").unwrap();
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains(r#"<html lang="en-US">"#));
        assert!(html.contains(r#"<meta name="viewport""#));
        assert!(html.contains("<title>Trade Show 2025</title>"));
        assert!(html.contains("<h1>Trade Show 2025</h1>"));
        assert!(html.contains("<h2>Thank you!</h2>"));
        assert!(html.contains(ENGLISH.thank_you_body));
        assert!(html.contains("<style>") && html.contains("PingFang SC"));
        assert!(!html.contains("<form") && !html.contains("<script"));

        let zh = render_thank_you("展会登记", "zh").unwrap();
        assert!(zh.contains(r#"<html lang="zh">"#));
        assert!(zh.contains("<h2>谢谢！</h2>"));
        assert!(zh.contains("我们已收到您的信息"));
    }

    #[test]
    fn field_kind_for_field() {
        use FieldKind::*;
        for (name, kind) in [
            ("email", Email),
            ("work_email", Email),
            ("Email", Email),
            ("phone", Tel),
            ("mobile", Tel),
            ("tel", Tel),
            ("phoneNumber", Tel),
            ("mobile-phone", Tel),
            ("hotel", Text),
            ("message", Textarea),
            ("notes", Textarea),
            ("comment", Textarea),
            ("inquiry", Textarea),
            ("name", Text),
            ("company", Text),
            ("", Text),
            ("姓名", Text),
        ] {
            assert_eq!(FieldKind::for_field(name), kind, "{name}");
        }
    }

    #[test]
    fn ui_text_for_language() {
        assert!(std::ptr::eq(
            UiText::for_language("zh-CN"),
            &SIMPLIFIED_CHINESE
        ));
        assert!(std::ptr::eq(
            UiText::for_language("zh"),
            &SIMPLIFIED_CHINESE
        ));
        assert!(std::ptr::eq(
            UiText::for_language("ZH_tw"),
            &SIMPLIFIED_CHINESE
        ));
        assert!(std::ptr::eq(UiText::for_language("en-US"), &ENGLISH));
        assert!(std::ptr::eq(UiText::for_language(""), &ENGLISH));
        assert!(std::ptr::eq(UiText::for_language("zu"), &ENGLISH));
        assert_eq!(UiText::for_language("zh-CN").submit, "提交");
        assert_eq!(UiText::for_language("en-US").submit, "Submit");
    }

    #[test]
    fn template_parses() {
        assert!(TEMPLATES.is_ok(), "{:?}", TEMPLATES.as_ref().err());
    }
}
