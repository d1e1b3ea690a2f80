//! The mail sender: SMTP through lettre, and the task that sends the outbox's unsent messages
//! when they fall due, records each result, and retries failures with backoff. Without SMTP
//! configured it does not run, and messages wait in the outbox marked unsent.

use super::{Service, ServiceResult};
use crate::config::EmailConfig;
use crate::domain::mail::{MAX_ATTEMPTS, MailStatus, OutMail, retry_after};
use crate::domain::time::Millis;
use crate::store::{Entity, Op};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use std::future::Future;
use std::time::Duration;

/// Messages taken from the queue per round.
const SEND_BATCH: usize = 32;

/// An SMTP connection pool and the sender address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Where the unsubscribe links point (for the `List-Unsubscribe` header).
    public_url: String,
}

impl Mailer {
    /// The configured sender; `Ok(None)` when no SMTP host is set.
    pub fn from_config(cfg: &EmailConfig, public_url: &str) -> Result<Option<Mailer>, String> {
        if cfg.smtp_host.is_empty() {
            return Ok(None);
        }
        let host = cfg.smtp_host.as_str();
        let builder = match cfg.security.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("email.smtp_host `{host}`: {e}"))?,
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("email.smtp_host `{host}`: {e}"))?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder
            .port(cfg.smtp_port)
            .timeout(Some(Duration::from_secs(cfg.timeout_secs.max(1))));
        if !cfg.username.is_empty() {
            let password = if cfg.password_file.as_os_str().is_empty() {
                cfg.password.clone()
            } else {
                std::fs::read_to_string(&cfg.password_file)
                    .map_err(|e| {
                        format!("email.password_file {}: {e}", cfg.password_file.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned()
            };
            builder = builder.credentials(Credentials::new(cfg.username.clone(), password));
        }
        let from = cfg
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("email.from `{}`: {e}", cfg.from))?;
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }))
    }

    fn message(&self, m: &OutMail) -> Result<Message, String> {
        let to =
            m.to.parse::<Mailbox>()
                .map_err(|e| format!("recipient `{}`: {e}", m.to))?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Leadline-Mail-Id"),
                m.id.to_string(),
            ));
        if m.marketing {
            // RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs here.
            let url = format!("{}/u/{}", self.public_url, m.token);
            b = b
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let built = match &m.html {
            Some(html) => b.multipart(MultiPart::alternative_plain_html(
                m.text.clone(),
                html.clone(),
            )),
            None => b.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(m.text.clone()),
            ),
        };
        built.map_err(|e| format!("cannot build the message: {e}"))
    }

    /// Sends one message.
    pub async fn send(&self, m: &OutMail) -> Result<(), String> {
        let message = self.message(m)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Service {
    /// Sends what is due now (up to `limit` messages). Returns how many were handled and when
    /// the next falls due.
    pub async fn send_due_mail(
        &self,
        mailer: &Mailer,
        limit: usize,
    ) -> ServiceResult<(usize, Option<Millis>)> {
        let now = self.now();
        let (due, next) = self.store.read()?.mails_due(now, limit)?;
        let n = due.len();
        for m in due {
            let snap = self.store.read()?;
            let lead = snap.lead(m.lead_id)?;
            drop(snap);
            let blocked = m.marketing && lead.as_ref().is_none_or(|l| l.flags.do_not_contact);
            let result = if blocked {
                Err(None)
            } else {
                mailer.send(&m).await.map_err(Some)
            };
            self.record_send(m, result).await?;
        }
        Ok((n, next))
    }

    /// Writes one send's outcome: sent, retry later, failed for good, or suppressed (`None`).
    async fn record_send(
        &self,
        m: OutMail,
        result: Result<(), Option<String>>,
    ) -> ServiceResult<()> {
        self.store
            .write(move |tx| {
                // The message may have changed (suppressed, erased) while it was being sent.
                let Some(current) = tx.mail(m.id)? else {
                    return Ok(());
                };
                if current.status != MailStatus::Unsent {
                    return Ok(());
                }
                let mut next = current.clone();
                next.attempts += 1;
                match &result {
                    Ok(()) => {
                        next.status = MailStatus::Sent;
                        next.sent_at = Some(tx.now);
                        next.last_error = None;
                        tx.event(
                            m.lead_id,
                            "email_sent",
                            None,
                            json!({"mail_id": m.id, "template": m.template, "subject": m.subject}),
                        )?;
                    }
                    Err(None) => {
                        next.status = MailStatus::Suppressed;
                        next.last_error = Some("the lead may not be contacted".into());
                    }
                    Err(Some(e)) if next.attempts >= MAX_ATTEMPTS => {
                        next.status = MailStatus::Failed;
                        next.last_error = Some(e.clone());
                        tx.event(
                            m.lead_id,
                            "email_failed",
                            None,
                            json!({"mail_id": m.id, "error": e, "attempts": next.attempts}),
                        )?;
                    }
                    Err(Some(e)) => {
                        next.next_attempt_at = tx.now + retry_after(next.attempts);
                        next.last_error = Some(e.clone());
                    }
                }
                tx.put_mail(Some(&current), &next)?;
                let lead = tx.lead(m.lead_id)?;
                tx.change(Entity::Mail, m.id, Op::Update, lead.as_ref())?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// Sends mail until `stop` resolves: what is due at once, then whenever the next message falls
/// due or a commit queues one.
pub async fn run_mailer(service: Service, mailer: Mailer, stop: impl Future<Output = ()>) {
    let added = service.store().mail_added();
    let clock = service.clock();
    super::scheduler::run_due_queue("mail sender", added, clock, stop, || {
        service.send_due_mail(&mailer, SEND_BATCH)
    })
    .await
}
