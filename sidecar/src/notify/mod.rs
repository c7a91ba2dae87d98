//! Outbound notifications: e-mail over SMTP (lettre), Slack incoming webhooks and plain JSON
//! webhooks. Used by approvals (approvers told of a new request, the requester's callback told
//! of the decision); budget and anomaly alerts reuse it by building a [`Notification`] and
//! [`targets`] from the policy's `alerts`.
//!
//! Sending never blocks or fails the API call that caused it: [`Notifier::dispatch`] spawns a
//! task, each delivery has a timeout, failures are logged and counted
//! (`pag0_notifications_total{channel,outcome}`) and not retried.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MessageBuilder, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pag0_policy::doc::Alerts;
use prometheus::IntCounterVec;
use serde_json::{json, Value};

const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a notification goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One message to all of these addresses.
    Email { to: Vec<String> },
    /// A Slack incoming webhook: `POST {"text": …}`.
    Slack { webhook_url: String },
    /// A JSON webhook: `POST` of [`Notification::payload`].
    Webhook { url: String },
}

impl Target {
    pub fn channel(&self) -> &'static str {
        match self {
            Target::Email { .. } => "email",
            Target::Slack { .. } => "slack",
            Target::Webhook { .. } => "webhook",
        }
    }
}

/// One thing to tell: a subject and a text for people, a JSON payload for machines.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub subject: String,
    pub text: String,
    pub payload: Value,
}

/// The targets the policy's `alerts` names for an event whose people are `people`: e-mail to
/// them if `channels` has `email`, Slack if it has `slack` and `slackWebhookUrl` is set,
/// the JSON webhook if it has `webhook` and `webhookUrl` is set. Alerts pass
/// `alerts.recipients`; approvals pass the project's approvers.
pub fn targets(alerts: Option<&Alerts>, people: &[String]) -> Vec<Target> {
    let Some(a) = alerts else { return Vec::new() };
    let has = |c: &str| a.channels.iter().any(|x| x.eq_ignore_ascii_case(c));
    let mut out = Vec::new();
    if has("email") && !people.is_empty() {
        out.push(Target::Email {
            to: people.to_vec(),
        });
    }
    if let Some(url) = a.slack_webhook_url.as_ref().filter(|_| has("slack")) {
        out.push(Target::Slack {
            webhook_url: url.clone(),
        });
    }
    if let Some(url) = a.webhook_url.as_ref().filter(|_| has("webhook")) {
        out.push(Target::Webhook { url: url.clone() });
    }
    out
}

/// `--smtp-url smtp://host[:port]` (plain SMTP, no TLS: a local relay) and `--smtp-from`.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub from: Mailbox,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Config(String),
    #[error("no SMTP relay configured (--smtp-url)")]
    NoSmtp,
    #[error("e-mail: {0}")]
    Email(String),
    #[error("http: {0}")]
    Http(String),
}

// === impl SmtpConfig ===

impl SmtpConfig {
    pub fn parse(url: &str, from: &str) -> Result<Self, NotifyError> {
        let rest = url.strip_prefix("smtp://").ok_or_else(|| {
            NotifyError::Config(format!("--smtp-url {url:?}: expected smtp://host[:port]"))
        })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| {
                    NotifyError::Config(format!("--smtp-url {url:?}: port {p:?} is not a number"))
                })?,
            ),
            None => (rest, 25),
        };
        if host.is_empty() {
            return Err(NotifyError::Config(format!("--smtp-url {url:?}: no host")));
        }
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| NotifyError::Config(format!("--smtp-from {from:?}: {e}")))?;
        Ok(SmtpConfig {
            host: host.to_string(),
            port,
            from,
        })
    }
}

/// Sends [`Notification`]s to [`Target`]s. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    http: reqwest::Client,
    counted: Option<IntCounterVec>,
}

// === impl Notifier ===

impl Notifier {
    pub fn new(smtp: Option<SmtpConfig>) -> Self {
        let smtp = smtp.map(|c| {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host)
                .port(c.port)
                .timeout(Some(SEND_TIMEOUT))
                .build();
            (transport, c.from)
        });
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .unwrap_or_default();
        Notifier {
            smtp,
            http,
            counted: None,
        }
    }

    /// Count deliveries in `pag0_notifications_total{channel,outcome=sent|failed}`.
    pub fn with_counter(mut self, counter: IntCounterVec) -> Self {
        self.counted = Some(counter);
        self
    }

    /// Sends in the background; the handle resolves to each target's result (tests await it,
    /// API handlers drop it).
    pub fn dispatch(
        &self,
        targets: Vec<Target>,
        n: Notification,
    ) -> tokio::task::JoinHandle<Vec<Result<(), NotifyError>>> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut results = Vec::with_capacity(targets.len());
            for t in &targets {
                let r = me.deliver(t, &n).await;
                if let Err(e) = &r {
                    tracing::warn!(
                        subject = %n.subject,
                        channel = t.channel(),
                        error = %e,
                        "notification failed"
                    );
                }
                if let Some(c) = &me.counted {
                    let outcome = if r.is_ok() { "sent" } else { "failed" };
                    c.with_label_values(&[t.channel(), outcome]).inc();
                }
                results.push(r);
            }
            results
        })
    }

    /// One delivery, awaited.
    pub async fn deliver(&self, target: &Target, n: &Notification) -> Result<(), NotifyError> {
        match target {
            Target::Email { to } => self.email(to, n).await,
            Target::Slack { webhook_url } => {
                self.post(webhook_url, &json!({ "text": slack_text(n) }))
                    .await
            }
            Target::Webhook { url } => self.post(url, &n.payload).await,
        }
    }

    fn message_to(&self, to: &[String], n: &Notification) -> Result<MessageBuilder, NotifyError> {
        let (_, from) = self.smtp.as_ref().ok_or(NotifyError::NoSmtp)?;
        let mut b = Message::builder()
            .from(from.clone())
            .subject(n.subject.clone());
        for addr in to {
            let mb = addr
                .parse::<Mailbox>()
                .map_err(|e| NotifyError::Email(format!("recipient {addr:?}: {e}")))?;
            b = b.to(mb);
        }
        Ok(b)
    }

    async fn email(&self, to: &[String], n: &Notification) -> Result<(), NotifyError> {
        let msg = self
            .message_to(to, n)?
            .body(n.text.clone())
            .map_err(|e| NotifyError::Email(e.to_string()))?;
        self.send_email(msg).await
    }

    /// One e-mail with `n.text` and a file attached, awaited (the compliance report).
    pub async fn email_with_attachment(
        &self,
        to: &[String],
        n: &Notification,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), NotifyError> {
        let ct = ContentType::parse(content_type)
            .map_err(|e| NotifyError::Email(format!("content type {content_type:?}: {e}")))?;
        let parts = MultiPart::mixed()
            .singlepart(SinglePart::plain(n.text.clone()))
            .singlepart(Attachment::new(filename.to_owned()).body(bytes, ct));
        let msg = self
            .message_to(to, n)?
            .multipart(parts)
            .map_err(|e| NotifyError::Email(e.to_string()))?;
        self.send_email(msg).await
    }

    async fn send_email(&self, msg: Message) -> Result<(), NotifyError> {
        let (transport, _) = self.smtp.as_ref().ok_or(NotifyError::NoSmtp)?;
        transport
            .send(msg)
            .await
            .map_err(|e| NotifyError::Email(e.to_string()))?;
        Ok(())
    }

    async fn post(&self, url: &str, body: &Value) -> Result<(), NotifyError> {
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| NotifyError::Http(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(NotifyError::Http(format!(
                "{url}: answered {}",
                resp.status()
            )));
        }
        Ok(())
    }
}

fn slack_text(n: &Notification) -> String {
    format!("*{}*\n{}", n.subject, n.text)
}

#[cfg(test)]
mod tests;
