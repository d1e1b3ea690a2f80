//! Golden files: one checked-in record of every stored type, encoded by the release that
//! introduced its format version. Each must still decode to the same value, so a change to a
//! stored struct that would strand existing data files fails here first. To add the files for
//! a *new* format version, run with `LEADLINE_BLESS_GOLDEN=1` once and commit what it writes.

use leadline::domain::activity::{Activity, LeadEvent};
use leadline::domain::form::{Form, FormField};
use leadline::domain::lead::{Flags, Lead, Score, Stage, Status, Utm};
use leadline::domain::mail::{MailStatus, OutMail};
use leadline::domain::score::{Part, Reason, ScoreChange, ScoreDetails};
use leadline::domain::sequence::{Enrollment, EnrollmentStatus};
use leadline::domain::sla::{SlaPolicy, SlaState, SlaStep};
use leadline::domain::stats::{ActivityStats, Tally};
use leadline::domain::user::{Role, Token, TokenKind, User};
use leadline::domain::visitor::{PageView, Visitor};
use leadline::domain::webhook::{Delivery, DeliveryStatus, Webhook};
use leadline::domain::work::{Notification, Pool, Task, Timer, TimerKind};
use leadline::store::codec::{Record, decode, encode};
use leadline::store::{ChangeEntry, Entity, IdempotentResponse, Op};
use std::fmt::Debug;
use std::path::PathBuf;
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

fn check<T: Record + PartialEq + Debug>(name: &str, expected: T) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.v{}.bin", T::VERSION));
    if std::env::var_os("LEADLINE_BLESS_GOLDEN").is_some() && !path.exists() {
        std::fs::write(&path, encode(&expected)).expect("write golden file");
    }
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("missing golden file {} ({e})", path.display()));
    assert_eq!(bytes[0], T::VERSION, "{name}: version byte");
    let decoded: T = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        decoded, expected,
        "{name}: decoded value differs from the golden record"
    );
}

#[test]
fn lead_v1() {
    check(
        "lead",
        Lead {
            id: id(1),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_060_000,
            version: 3,
            name: Some("王总".into()),
            email: Some("wang@example.cn".into()),
            phone: Some("+8613812345678".into()),
            company: Some("纷享销客".into()),
            title: Some("总经理".into()),
            industry: Some("manufacturing".into()),
            company_size: Some(120),
            region: Some("华东".into()),
            country: Some("CN".into()),
            source: Some("partner".into()),
            channel: Some("referral".into()),
            utm: Utm {
                source: Some("wechat".into()),
                medium: Some("social".into()),
                campaign: Some("expo-2026".into()),
                term: None,
                content: None,
            },
            campaign_id: Some(id(2)),
            stage: Stage::Mql,
            status: Status::Attempting,
            owner_id: Some(id(3)),
            pool_id: None,
            score: Score {
                total: 55,
                profile: 20,
                engagement: 15,
                source: 20,
                interaction: 0,
            },
            tags: vec!["vip".into(), "expo".into()],
            fields: r#"{"budget":"500k"}"#.into(),
            flags: Flags {
                personal_email: false,
                invalid_email: false,
                do_not_contact: true,
            },
            first_touch_at: Some(1_795_000_030_000),
            last_activity_at: Some(1_795_000_050_000),
            next_follow_up_at: None,
        },
    );
}

#[test]
fn activity_v1() {
    check(
        "activity",
        Activity {
            id: id(10),
            lead_id: id(1),
            kind: "call".into(),
            occurred_at: 1_795_000_030_000,
            recorded_at: 1_795_000_031_000,
            actor_id: Some(id(3)),
            campaign_id: None,
            text: Some("客户关注智能制造和MES系统".into()),
            properties: r#"{"minutes":12}"#.into(),
        },
    );
}

#[test]
fn lead_event_v1() {
    check(
        "lead_event",
        LeadEvent {
            id: id(11),
            lead_id: id(1),
            at: 1_795_000_040_000,
            kind: "merged".into(),
            actor_id: Some(id(3)),
            data: r#"{"reason":"email","filled":["company"]}"#.into(),
        },
    );
}

#[test]
fn user_v1() {
    check(
        "user",
        User {
            id: id(3),
            created_at: 1_794_000_000_000,
            updated_at: 1_794_000_000_000,
            version: 1,
            name: "li.lei".into(),
            email: Some("li.lei@example.cn".into()),
            role: Role::Rep,
            team: Some("east".into()),
            manager_id: Some(id(4)),
            territories: vec!["华东".into(), "CN-31".into()],
            product_lines: vec!["A".into()],
            capacity: 50,
            active: true,
            senior: false,
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        },
    );
}

#[test]
fn token_v1() {
    check(
        "token",
        Token {
            user_id: id(3),
            kind: TokenKind::Session,
            created_at: 1_794_000_000_000,
            expires_at: Some(1_794_604_800_000),
        },
    );
}

#[test]
fn change_v1() {
    check(
        "change",
        ChangeEntry {
            entity: Entity::Lead,
            id: id(1),
            op: Op::Update,
            at: 1_795_000_060_000,
            lead_id: Some(id(1)),
            owner_id: Some(id(3)),
            pool_id: None,
        },
    );
}

#[test]
fn idempotent_response_v1() {
    check(
        "idempotent_response",
        IdempotentResponse {
            fingerprint: vec![7; 32],
            status: 201,
            location: Some(format!("/v1/leads/{}", id(1))),
            etag: Some("\"1\"".into()),
            body: br#"{"id":"x","merged":false}"#.to_vec(),
            created_at: 1_795_000_000_000,
        },
    );
}

#[test]
fn form_v1() {
    check(
        "form",
        Form {
            id: id(20),
            key: "expo-2026".into(),
            name: "展会留资".into(),
            language: "zh-CN".into(),
            fields: vec![
                FormField {
                    name: "name".into(),
                    label: "姓名".into(),
                    required: true,
                },
                FormField {
                    name: "budget".into(),
                    label: "预算".into(),
                    required: false,
                },
            ],
            redirect_url: Some("https://www.example.cn/thanks".into()),
            campaign_id: Some(id(21)),
            allowed_origins: vec!["https://www.example.cn".into()],
            source: "web_form".into(),
            activity_kind: "demo_request".into(),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_001_000,
            version: 2,
        },
    );
}

#[test]
fn visitor_v1() {
    check(
        "visitor",
        Visitor {
            id: "0123456789abcdef0123456789abcdef".into(),
            first_seen: 1_795_000_000_000,
            last_seen: 1_795_000_090_000,
            lead_id: Some(id(1)),
            views: 3,
        },
    );
}

#[test]
fn page_view_v1() {
    check(
        "page_view",
        PageView {
            at: 1_795_000_000_000,
            url: "https://www.example.cn/pricing?utm_source=baidu".into(),
            path: "/pricing".into(),
            referrer: Some("https://www.baidu.com/".into()),
            title: Some("价格".into()),
            utm: Utm {
                source: Some("baidu".into()),
                ..Utm::default()
            },
        },
    );
}

#[test]
fn activity_stats_v1() {
    check(
        "activity_stats",
        ActivityStats {
            kinds: vec![
                Tally {
                    key: "page_view".into(),
                    count: 6,
                    last_at: 1_795_000_000_000,
                },
                Tally {
                    key: "demo_request".into(),
                    count: 1,
                    last_at: 1_795_000_060_000,
                },
            ],
            pages: vec![Tally {
                key: "/pricing".into(),
                count: 2,
                last_at: 1_795_000_000_000,
            }],
            last_at: Some(1_795_000_060_000),
        },
    );
}

#[test]
fn score_details_v1() {
    check(
        "score_details",
        ScoreDetails {
            reasons: vec![
                Reason {
                    rule: "title is a decision maker".into(),
                    points: 20,
                    part: Part::Profile,
                },
                Reason {
                    rule: "free or personal email domain".into(),
                    points: -10,
                    part: Part::Profile,
                },
            ],
            history: vec![ScoreChange {
                at: 1_795_000_000_000,
                score: Score {
                    total: 10,
                    profile: 10,
                    engagement: 0,
                    source: 0,
                    interaction: 0,
                },
                trigger: "change".into(),
            }],
            review_at: Some(1_802_776_000_001),
        },
    );
}

#[test]
fn pool_v1() {
    check(
        "pool",
        Pool {
            id: id(30),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_000_000,
            version: 1,
            name: "华东公海".into(),
            max_claims_per_rep: 20,
        },
    );
}

#[test]
fn task_v1() {
    check(
        "task",
        Task {
            id: id(31),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_030_000,
            version: 2,
            lead_id: Some(id(1)),
            owner_id: id(3),
            title: "回电王总，确认预算".into(),
            due_at: Some(1_795_086_400_000),
            done: true,
            done_at: Some(1_795_000_030_000),
            created_by: Some(id(4)),
        },
    );
}

#[test]
fn timer_v1() {
    // One record per kind, so a reordered enum variant shows up here.
    for (n, kind) in [
        TimerKind::Sla(SlaStep::Remind),
        TimerKind::Sla(SlaStep::Escalate),
        TimerKind::Sla(SlaStep::Reclaim),
        TimerKind::FollowUp,
        TimerKind::TaskReminder,
        TimerKind::RuleLater,
    ]
    .into_iter()
    .enumerate()
    {
        check(
            &format!("timer_{}", kind.as_str().replace('.', "_")),
            Timer {
                id: id(40 + n as u128),
                due: 1_795_007_200_000,
                kind,
                subject: id(1),
                created_at: 1_795_000_000_000,
            },
        );
    }
}

#[test]
fn notification_v1() {
    check(
        "notification",
        Notification {
            id: id(50),
            at: 1_795_007_200_000,
            kind: "sla.escalated".into(),
            recipient_id: id(4),
            lead_id: Some(id(1)),
            task_id: None,
            data: r#"{"owner_id":"x","step":"escalate"}"#.into(),
            read_at: Some(1_795_007_260_000),
        },
    );
}

#[test]
fn sla_state_v1() {
    check(
        "sla_state",
        SlaState {
            owner_id: id(3),
            policy: SlaPolicy {
                first_touch_minutes: 120,
                remind_minutes: 120,
                escalate_minutes: 240,
                reclaim_minutes: 480,
                follow_up_minutes: 4320,
            },
            assigned_at: 1_795_000_000_000,
            first_touch_due: 1_795_007_200_000,
            first_touch_at: Some(1_795_003_600_000),
            last_touch_at: Some(1_795_003_600_000),
            steps_taken: vec![SlaStep::Remind],
            follow_up_due: Some(1_795_262_800_000),
            original_due: 1_795_007_200_000,
            first_touch_by: Some(id(3)),
        },
    );
}

#[test]
fn timer_sequence_v1() {
    check(
        "timer_sequence_step",
        Timer {
            id: id(45),
            due: 1_795_604_800_000,
            kind: TimerKind::Sequence,
            subject: id(60),
            created_at: 1_795_000_000_000,
        },
    );
}

#[test]
fn enrollment_v1() {
    check(
        "enrollment",
        Enrollment {
            id: id(60),
            lead_id: id(1),
            sequence: "welcome".into(),
            status: EnrollmentStatus::Exited,
            step: 3,
            enrolled_at: 1_795_000_000_000,
            updated_at: 1_795_604_800_000,
            version: 4,
            next_at: None,
            reason: Some("sql".into()),
            enrolled_by: Some(id(3)),
            steps_run: 3,
        },
    );
}

#[test]
fn webhook_v1() {
    check(
        "webhook",
        Webhook {
            id: id(60),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_060_000,
            version: 2,
            url: "https://hooks.example.cn/leadline?team=华东".into(),
            events: vec!["lead.*".into(), "sla.escalated".into()],
            secret: "whsec_0123456789abcdef0123456789abcdef01234567".into(),
            active: true,
        },
    );
}

#[test]
fn mail_v1() {
    check(
        "mail",
        OutMail {
            id: id(70),
            lead_id: id(1),
            enrollment_id: Some(id(60)),
            template: "welcome_1".into(),
            to: "wang@example.cn".into(),
            subject: "欢迎, 王总".into(),
            text: "你好 王总\n\nUnsubscribe: https://ll.example/u/tok".into(),
            html: Some("<p>你好 <a href=\"https://ll.example/c/tok/0\">x</a></p>".into()),
            marketing: true,
            token: "tok".into(),
            links: vec!["https://example.com/start".into()],
            status: MailStatus::Unsent,
            attempts: 2,
            next_attempt_at: 1_795_000_240_000,
            created_at: 1_795_000_000_000,
            sent_at: None,
            last_error: Some("451 try again later".into()),
        },
    );
}

#[test]
fn delivery_v1() {
    // One record per status, so a reordered enum variant shows up here.
    for (n, status) in [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Dead,
    ]
    .into_iter()
    .enumerate()
    {
        check(
            &format!("delivery_{}", status.as_str()),
            Delivery {
                id: id(70 + n as u128),
                webhook_id: id(60),
                created_at: 1_795_000_000_000,
                event: "lead.assigned".into(),
                seq: 4_242,
                at: 1_795_000_000_000,
                entity: "notification".into(),
                entity_id: id(50),
                lead_id: Some(id(1)),
                data: r#"{"owner_id":"x","recipient_id":"y","task_id":null}"#.into(),
                chain_key: id(1),
                chain_pos: id(70 + n as u128),
                status,
                attempts: 3,
                first_attempt_at: Some(1_795_000_000_500),
                last_attempt_at: Some(1_795_000_030_500),
                next_attempt_at: (status == DeliveryStatus::Pending).then_some(1_795_000_070_500),
                last_status_code: Some(503),
                last_error: Some("HTTP 503: busy".into()),
                delivered_at: (status == DeliveryStatus::Delivered).then_some(1_795_000_080_000),
                finished_at: (status != DeliveryStatus::Pending).then_some(1_795_000_080_000),
                replays: 1,
            },
        );
    }
}
