//! Chat templates: the Jinja template a model's tokenizer config ships, rendered with
//! `minijinja` in the environment Hugging Face's `apply_chat_template` provides —
//! `trim_blocks`/`lstrip_blocks`, loop controls, Python string methods, `raise_exception`,
//! `strftime_now`, and a `tojson` that writes what Python's `json.dumps` writes.

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};

use crate::error::{Error, Result};

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The special tokens (`bos_token`, `eos_token`, ...) the template may refer to.
    special: Vec<(String, String)>,
}

/// What to render besides the messages.
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    /// End with the cue for the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool (function) schemas, for templates that take `tools`.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Extra template variables (mlx-lm's `--chat-template-config`, e.g. `enable_thinking`).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// End the text right after the last message's content, leaving that message open for
    /// the model to continue (transformers' `continue_final_message`; what
    /// `mlx_lm.cache_prompt` renders and `--prefill-response` needs).
    pub continue_final_message: bool,
}

/// Marks the end of the final message's content when it is to be continued (the tag
/// transformers uses, trailing space included, so a template that trims it shows).
const CONTINUE_TAG: &str = "CONTINUE_FINAL_MESSAGE_TAG ";

impl ChatTemplate {
    /// Compiles `source`; `special` are the special tokens made visible to it by name.
    pub fn new(source: String, special: Vec<(String, String)>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime(&fmt, now_utc()));
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source).map_err(|e| Error::Template(describe(&e)))?;
        Ok(ChatTemplate { env, special })
    }

    /// Renders `messages` (objects with `role`, `content` and whatever else the template
    /// reads, e.g. `tool_calls`).
    pub fn render(&self, messages: &[serde_json::Value], options: &ChatOptions) -> Result<String> {
        let mut ctx = serde_json::Map::new();
        for (k, v) in &self.special {
            ctx.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let mut messages = messages.to_vec();
        if options.continue_final_message {
            let content = messages.last_mut().and_then(|m| m.get_mut("content"));
            match content {
                Some(serde_json::Value::String(s)) => s.push_str(CONTINUE_TAG),
                _ => {
                    return Err(Error::Template(
                        "continue_final_message: the last message has no text content to continue".into(),
                    ))
                }
            }
        }
        ctx.insert("messages".into(), serde_json::Value::Array(messages));
        ctx.insert("add_generation_prompt".into(), options.add_generation_prompt.into());
        if let Some(tools) = &options.tools {
            ctx.insert("tools".into(), serde_json::Value::Array(tools.clone()));
        }
        for (k, v) in &options.extra {
            ctx.insert(k.clone(), v.clone());
        }
        let template = self.env.get_template("chat").map_err(|e| Error::Template(describe(&e)))?;
        let text = template.render(Value::from_serialize(&ctx)).map_err(|e| Error::Template(describe(&e)))?;
        if !options.continue_final_message {
            return Ok(text);
        }
        // Cut at the tag; if the template trimmed the content (and the tag's space), whatever
        // whitespace the message ended with goes too.
        let tag = CONTINUE_TAG.trim_end();
        match text.rfind(tag) {
            Some(at) if text[at..].starts_with(CONTINUE_TAG) => Ok(text[..at].to_string()),
            Some(at) => Ok(text[..at].trim_end().to_string()),
            None => Err(Error::Template(
                "continue_final_message: the template does not show the last message's content".into(),
            )),
        }
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_py_json(&json, indent, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_py_json(v: &serde_json::Value, indent: Option<usize>, sort: bool, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, sort, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            let mut entries: Vec<_> = map.iter().collect();
            if sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&serde_json::to_string(k).expect("a string serializes"));
                out.push_str(": ");
                write_py_json(item, indent, sort, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        J::Array(_) => out.push_str("[]"),
        J::Object(_) => out.push_str("{}"),
        J::Number(n) if n.is_f64() => {
            let f = n.as_f64().expect("f64");
            out.push_str(&if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                n.to_string()
            });
        }
        other => out.push_str(&serde_json::to_string(other).expect("JSON serializes")),
    }
}

/// The current UTC time as (year, month, day, hour, minute, second, weekday 0=Monday, day of year).
fn now_utc() -> [i64; 8] {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    civil(secs)
}

/// Breaks Unix seconds into calendar fields (Howard Hinnant's days-to-civil algorithm).
fn civil(secs: i64) -> [i64; 8] {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy_march = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_march + 2) / 153;
    let day = doy_march - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = BEFORE[month as usize - 1] + day + i64::from(leap && month > 2);
    let weekday = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday
    [year, month, day, rem / 3600, rem / 60 % 60, rem % 60, weekday, yday]
}

/// Python's `strftime` for the common directives.
fn strftime(fmt: &str, t: [i64; 8]) -> std::result::Result<String, minijinja::Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let [year, month, day, hour, minute, second, weekday, yday] = t;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let d = chars.next().unwrap_or('%');
        let s = match d {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year % 100),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:>2}"),
            '-' => match chars.next() {
                Some('d') => day.to_string(),
                Some('m') => month.to_string(),
                Some('H') => hour.to_string(),
                other => return Err(unsupported(format!("-{}", other.unwrap_or(' ')))),
            },
            'H' => format!("{hour:02}"),
            'I' => format!("{:02}", (hour + 11) % 12 + 1),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'B' => MONTHS[month as usize - 1].to_string(),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_string(),
            'A' => DAYS[weekday as usize].to_string(),
            'a' => DAYS[weekday as usize][..3].to_string(),
            'j' => format!("{yday:03}"),
            '%' => "%".to_string(),
            other => return Err(unsupported(other.to_string())),
        };
        out.push_str(&s);
    }
    Ok(out)
}

fn unsupported(directive: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: unsupported directive %{directive}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calendar_and_strftime() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60.
        let t = civil(1709211909);
        assert_eq!(t, [2024, 2, 29, 13, 5, 9, 3, 60]);
        assert_eq!(strftime("%d %b %Y %A %I%p %j %%", t).unwrap(), "29 Feb 2024 Thursday 01PM 060 %");
    }

    #[test]
    fn python_json() {
        let v = json!({"b": [1, 2.0, "é\n"], "a": {}, "c": null});
        let mut s = String::new();
        write_py_json(&v, None, false, 0, &mut s);
        assert_eq!(s, r#"{"b": [1, 2.0, "é\n"], "a": {}, "c": null}"#);
        let mut s = String::new();
        write_py_json(&v, Some(2), true, 0, &mut s);
        assert_eq!(s, "{\n  \"a\": {},\n  \"b\": [\n    1,\n    2.0,\n    \"é\\n\"\n  ],\n  \"c\": null\n}");
    }

    #[test]
    fn raise_exception_surfaces() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}".into(), vec![]).unwrap();
        let e = t.render(&[], &ChatOptions::default()).unwrap_err().to_string();
        assert!(e.contains("roles must alternate"), "{e}");
        let e = ChatTemplate::new("{% if %}".into(), vec![]).err().unwrap().to_string();
        assert!(e.contains("chat template"), "{e}");
    }
}
