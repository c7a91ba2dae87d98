use pag0_policy::doc::Alerts;

use super::*;

fn alerts(channels: &[&str]) -> Alerts {
    Alerts {
        channels: channels.iter().map(|s| s.to_string()).collect(),
        recipients: vec!["cfo@acme.com".into()],
        slack_webhook_url: Some("http://127.0.0.1:9/slack".into()),
        webhook_url: Some("http://127.0.0.1:9/hook".into()),
        triggers: None,
    }
}

#[test]
fn targets_follow_the_policy_channels() {
    let people = vec!["lead@acme.com".to_string()];
    assert_eq!(targets(None, &people), vec![]);
    assert_eq!(
        targets(Some(&alerts(&["email", "slack"])), &people),
        vec![
            Target::Email { to: people.clone() },
            Target::Slack {
                webhook_url: "http://127.0.0.1:9/slack".into()
            }
        ]
    );
    assert_eq!(targets(Some(&alerts(&["slack"])), &people).len(), 1);
    assert_eq!(
        targets(Some(&alerts(&["email"])), &[]),
        vec![],
        "no people, no e-mail"
    );
    assert_eq!(
        targets(Some(&alerts(&["webhook"])), &[])[0].channel(),
        "webhook"
    );
}

#[test]
fn smtp_urls() {
    let c = SmtpConfig::parse("smtp://127.0.0.1:2525", "pag0@acme.com").unwrap();
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 2525));
    assert_eq!(
        SmtpConfig::parse("smtp://relay", "pag0@acme.com")
            .unwrap()
            .port,
        25
    );
    for bad in ["http://x", "smtp://:25", "smtp://h:x"] {
        assert!(SmtpConfig::parse(bad, "pag0@acme.com").is_err(), "{bad}");
    }
    assert!(SmtpConfig::parse("smtp://h", "not an address").is_err());
}

#[tokio::test]
async fn failures_are_counted_not_raised() {
    let counter =
        IntCounterVec::new(prometheus::Opts::new("n", "n"), &["channel", "outcome"]).unwrap();
    let n = Notifier::new(None).with_counter(counter.clone());
    // Nothing listens on the discard port; there is no SMTP relay.
    let note = Notification {
        subject: "s".into(),
        text: "t".into(),
        payload: json!({}),
    };
    let results = n
        .dispatch(
            vec![
                Target::Webhook {
                    url: "http://127.0.0.1:9/x".into(),
                },
                Target::Email {
                    to: vec!["a@b.c".into()],
                },
            ],
            note,
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(matches!(results[1], Err(NotifyError::NoSmtp)));
    assert_eq!(counter.with_label_values(&["webhook", "failed"]).get(), 1);
    assert_eq!(counter.with_label_values(&["email", "failed"]).get(), 1);
}
