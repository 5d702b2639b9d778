//! What the broker should hold, what it holds, and the commands between the two. Pure: no I/O,
//! so every rule is unit-tested here and the adapter only fetches and sends.
//!
//! The model, for Mosquitto 2.0 (no `%u` substitution, so one role per user):
//! - every active BAL user is a dynsec client with exactly one role, `bal-user-<username>`, and
//!   no groups;
//! - a producer's role: publish, subscribe and receive on `platone/<self>/#` (which also matches
//!   `platone/<self>`); subscribe and receive on `setpoints/<self>/#` (its devices' set points),
//!   publish on `setpoints/<self>/+/ack` (their answers);
//! - a consumer's role: subscribe and receive on `platone/<p>/#` for each accepted, unexpired
//!   grant on producer `p`; an admin's: the same for every producer (one producer per filter,
//!   as with the embedded broker);
//! - default access denies publish, subscribe and delivery, so anything not listed is refused,
//!   and delivery (`publishClientReceive`) is checked per message;
//! - the broker's admin, whose client the BAL also sends set points as, holds the role
//!   `bal-setpoint-sender` (publish on `setpoints/+/+`) beside its own roles, which are left
//!   alone;
//! - everything else is removed: clients of no active user, stray `bal-*` roles, extra roles,
//!   group memberships, deny or re-prioritised entries.
//!
//! Removals are ordered before additions, so a revoked grant stops delivery before anything
//! else changes.

use std::collections::{BTreeMap, BTreeSet};

use bal_core::{ReadScope, Role, Subscription, Username};
use bal_scd::User;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Roles the BAL owns start with this.
pub const ROLE_PREFIX: &str = "bal-";
const USER_ROLE_PREFIX: &str = "bal-user-";

/// The ACL types the BAL grants. All are `allow`, priority 0.
pub const SEND: &str = "publishClientSend";
pub const RECEIVE: &str = "publishClientReceive";
pub const SUBSCRIBE: &str = "subscribePattern";

/// One allow entry of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    pub acltype: String,
    pub topic: String,
}

impl Acl {
    fn allow(acltype: &str, topic: String) -> Self {
        Self {
            acltype: acltype.to_owned(),
            topic,
        }
    }
}

/// The role that lets the BAL's own client (the admin's) publish set points.
pub const SETPOINT_SENDER_ROLE: &str = "bal-setpoint-sender";

fn setpoint_sender_acls() -> BTreeSet<Acl> {
    BTreeSet::from([Acl::allow(SEND, "setpoints/+/+".to_owned())])
}

/// The broker's default access: deny everything but unsubscribing.
pub const DEFAULT_ACCESS: [(&str, bool); 4] = [
    ("publishClientSend", false),
    ("publishClientReceive", false),
    ("subscribe", false),
    ("unsubscribe", true),
];

/// The role name of a user.
pub fn role_of(username: &str) -> String {
    format!("{USER_ROLE_PREFIX}{username}")
}

/// Each active user's role entries.
pub type Desired = BTreeMap<String, BTreeSet<Acl>>;

fn read_acls(producer: &str) -> [Acl; 2] {
    let all = format!("platone/{producer}/#");
    [Acl::allow(SUBSCRIBE, all.clone()), Acl::allow(RECEIVE, all)]
}

/// What the broker should hold for these users and grants at `now`: producers send on their
/// own topics, and everyone receives what `bal-core`'s read rule (`ReadScope`) lets them read.
pub fn desired(users: &[User], grants: &[Subscription], now: DateTime<Utc>) -> Desired {
    let producers: Vec<&Username> = users
        .iter()
        .filter(|u| u.role == Role::Producer)
        .map(|u| &u.username)
        .collect();
    let mut by_consumer: BTreeMap<&Username, Vec<&Subscription>> = BTreeMap::new();
    for g in grants {
        by_consumer.entry(&g.consumer).or_default().push(g);
    }
    let mut want = Desired::new();
    for u in users {
        let acls = want.entry(u.username.to_string()).or_default();
        if u.role == Role::Producer {
            acls.insert(Acl::allow(SEND, format!("platone/{}/#", u.username)));
            let commands = format!("setpoints/{}/#", u.username);
            acls.insert(Acl::allow(SUBSCRIBE, commands.clone()));
            acls.insert(Acl::allow(RECEIVE, commands));
            acls.insert(Acl::allow(SEND, format!("setpoints/{}/+/ack", u.username)));
        }
        let theirs = by_consumer.get(&u.username).into_iter().flatten().copied();
        match ReadScope::of(u, theirs, now) {
            ReadScope::All => acls.extend(producers.iter().flat_map(|p| read_acls(p.as_str()))),
            ReadScope::Producers(readable) => {
                acls.extend(readable.iter().flat_map(|p| read_acls(p.as_str())))
            }
        }
    }
    want
}

/// One role entry as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualAcl {
    pub acl: Acl,
    pub allow: bool,
    pub priority: i64,
}

/// What the broker holds, from `listClients`, `listRoles` (verbose) and `getDefaultACLAccess`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    /// username → (roles, groups)
    pub clients: BTreeMap<String, (Vec<String>, Vec<String>)>,
    pub roles: BTreeMap<String, Vec<ActualAcl>>,
    pub default_access: BTreeMap<String, bool>,
}

impl Actual {
    /// Reads the three replies' `data`.
    pub fn from_replies(clients: &Value, roles: &Value, default_access: &Value) -> Self {
        let names = |v: &Value, key: &str, field: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x[field].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut actual = Actual::default();
        for c in clients["clients"].as_array().into_iter().flatten() {
            if let Some(name) = c["username"].as_str() {
                actual.clients.insert(
                    name.to_owned(),
                    (
                        names(c, "roles", "rolename"),
                        names(c, "groups", "groupname"),
                    ),
                );
            }
        }
        for r in roles["roles"].as_array().into_iter().flatten() {
            let Some(name) = r["rolename"].as_str() else {
                continue;
            };
            let acls = r["acls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some(ActualAcl {
                        acl: Acl::allow(a["acltype"].as_str()?, a["topic"].as_str()?.to_owned()),
                        allow: a["allow"].as_bool().unwrap_or(false),
                        priority: a["priority"].as_i64().unwrap_or(0),
                    })
                })
                .collect();
            actual.roles.insert(name.to_owned(), acls);
        }
        for a in default_access["acls"].as_array().into_iter().flatten() {
            if let (Some(t), Some(allow)) = (a["acltype"].as_str(), a["allow"].as_bool()) {
                actual.default_access.insert(t.to_owned(), allow);
            }
        }
        actual
    }
}

/// The commands that turn `actual` into `desired`, removals first. `admin` is the broker's own
/// admin client, never touched. New clients get no password: they cannot log in until the
/// adapter sets one.
pub fn plan(desired: &Desired, actual: &Actual, admin: &str) -> Vec<Value> {
    let mut removals = Vec::new();
    let mut additions = Vec::new();

    if DEFAULT_ACCESS
        .iter()
        .any(|(t, allow)| actual.default_access.get(*t) != Some(allow))
    {
        let acls: Vec<Value> = DEFAULT_ACCESS
            .iter()
            .map(|(t, allow)| json!({ "acltype": t, "allow": allow }))
            .collect();
        removals.push(json!({ "command": "setDefaultACLAccess", "acls": acls }));
    }

    for (name, (roles, groups)) in &actual.clients {
        if name == admin {
            continue;
        }
        if !desired.contains_key(name) {
            removals.push(json!({ "command": "deleteClient", "username": name }));
            continue;
        }
        let own = role_of(name);
        for r in roles.iter().filter(|r| **r != own) {
            removals
                .push(json!({ "command": "removeClientRole", "username": name, "rolename": r }));
        }
        for g in groups {
            removals
                .push(json!({ "command": "removeGroupClient", "groupname": g, "username": name }));
        }
        if !roles.contains(&own) {
            additions
                .push(json!({ "command": "addClientRole", "username": name, "rolename": own }));
        }
    }

    let sender_acls = setpoint_sender_acls();
    for (role, acls) in &actual.roles {
        if !role.starts_with(ROLE_PREFIX) {
            continue;
        }
        let owner = role.strip_prefix(USER_ROLE_PREFIX);
        let want = if role == SETPOINT_SENDER_ROLE {
            Some(&sender_acls)
        } else {
            owner.and_then(|o| desired.get(o))
        };
        let Some(want) = want else {
            removals.push(json!({ "command": "deleteRole", "rolename": role }));
            continue;
        };
        for a in acls {
            if !(a.allow && a.priority == 0 && want.contains(&a.acl)) {
                removals.push(json!({
                    "command": "removeRoleACL", "rolename": role,
                    "acltype": a.acl.acltype, "topic": a.acl.topic,
                }));
            }
        }
    }

    for (name, want) in desired {
        let role = role_of(name);
        let existing = actual.roles.get(&role);
        if existing.is_none() {
            additions.push(json!({ "command": "createRole", "rolename": role }));
        }
        for acl in want {
            let present = existing.is_some_and(|have| {
                have.iter()
                    .any(|a| a.acl == *acl && a.allow && a.priority == 0)
            });
            if !present {
                additions.push(json!({
                    "command": "addRoleACL", "rolename": role,
                    "acltype": acl.acltype, "topic": acl.topic, "allow": true, "priority": 0,
                }));
            }
        }
        if !actual.clients.contains_key(name) {
            // Roles are linked after creation: `createClient` with `roles` loses the link in
            // 2.0.x (docs/notes/mosquitto-dynsec-2.0.md).
            additions.push(json!({ "command": "createClient", "username": name }));
            additions
                .push(json!({ "command": "addClientRole", "username": name, "rolename": role }));
        }
    }
    removals.extend(additions);
    removals
}

/// The commands that let the admin's client (the BAL's) send set points: the sender role,
/// beside whatever roles the admin holds. Apart from [`plan`] because giving the admin a role
/// makes Mosquitto disconnect it (so that it reconnects under its new rights): the reply to
/// these commands is lost, and they must come last.
pub fn sender_plan(actual: &Actual, admin: &str) -> Vec<Value> {
    let sender_acls = setpoint_sender_acls();
    let mut additions = Vec::new();
    let sender = actual.roles.get(SETPOINT_SENDER_ROLE);
    if sender.is_none() {
        additions.push(json!({ "command": "createRole", "rolename": SETPOINT_SENDER_ROLE }));
    }
    for acl in &sender_acls {
        if !sender.is_some_and(|have| {
            have.iter()
                .any(|a| a.acl == *acl && a.allow && a.priority == 0)
        }) {
            additions.push(json!({
                "command": "addRoleACL", "rolename": SETPOINT_SENDER_ROLE,
                "acltype": acl.acltype, "topic": acl.topic, "allow": true, "priority": 0,
            }));
        }
    }
    if let Some((roles, _)) = actual.clients.get(admin)
        && !roles.iter().any(|r| r == SETPOINT_SENDER_ROLE)
    {
        additions.push(json!({
            "command": "addClientRole", "username": admin, "rolename": SETPOINT_SENDER_ROLE,
        }));
    }
    additions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::subscribe_allowed;
    use crate::testing::user;
    use bal_core::{FilterScope, Topic, Username};
    use proptest::prelude::*;

    /// Whether a role entry `platone/<p>/#` of Mosquitto's lets `filter` be subscribed: the
    /// filter stays below that producer's root.
    fn plan_lets_subscribe(d: &Desired, user: &str, filter: &str) -> bool {
        d[user].iter().any(|a| {
            let root = a.topic.trim_end_matches("/#");
            a.acltype == SUBSCRIBE && (filter == root || filter.starts_with(&format!("{root}/")))
        })
    }

    const NAMES: [&str; 7] = [
        "admin",
        "producer1",
        "producer2",
        "producer3",
        "consumer1",
        "consumer2",
        "consumer3",
    ];

    fn filters() -> impl Strategy<Value = String> {
        let name = prop::sample::select(NAMES.to_vec());
        let shape = prop::sample::select(vec![
            "platone/{}",
            "platone/{}/#",
            "platone/{}/+/x",
            "platone/{}/pmu/7",
            "platone/{}//a",
            "other/{}",
            "$share/g/platone/{}",
            "platone/+",
            "platone/#",
            "#",
        ]);
        (shape, name).prop_map(|(s, n)| s.replace("{}", n))
    }

    proptest! {
        /// For random grants (any status, expired or not) and filters, Mosquitto's plan and
        /// the embedded broker's subscribe check agree with `bal-core`'s read rule: neither
        /// lets anyone read outside their `ReadScope`, and they give the same answer for every
        /// filter on an existing producer's topics that the embedded broker accepts the syntax
        /// of. (Elsewhere they may differ harmlessly: an admin may subscribe to a name that is
        /// no producer's on the embedded broker, where nothing is ever published; Mosquitto
        /// accepts empty levels, still below a readable root.)
        #[test]
        fn the_mosquitto_plan_and_the_embedded_checks_follow_the_read_rule(
            grants in prop::collection::vec((4usize..7, 1usize..4, 0u8..4, 0u8..3), 0..12),
            filters in prop::collection::vec(filters(), 1..20),
        ) {
            let now = chrono::Utc::now();
            let users: Vec<User> = NAMES
                .iter()
                .map(|n| {
                    let role = match n.as_bytes()[0] {
                        b'a' => Role::Admin,
                        b'p' => Role::Producer,
                        _ => Role::Consumer,
                    };
                    user(n, role)
                })
                .collect();
            let grants: Vec<Subscription> = grants
                .into_iter()
                .map(|(c, p, status, expiry)| {
                    let mut g = grant(NAMES[c], NAMES[p], None);
                    g.status = [
                        bal_core::SubscriptionStatus::Requested,
                        bal_core::SubscriptionStatus::Accepted,
                        bal_core::SubscriptionStatus::Refused,
                        bal_core::SubscriptionStatus::Revoked,
                    ][status as usize];
                    g.expires_at = [None, Some(now - chrono::Duration::seconds(5)),
                        Some(now + chrono::Duration::hours(1))][expiry as usize];
                    g
                })
                .collect();
            let plan = desired(&users, &grants, now);
            for u in &users {
                let scope = ReadScope::of(u, &grants, now);
                for f in &filters {
                    let mosquitto = plan_lets_subscribe(&plan, u.username.as_str(), f);
                    let embedded = subscribe_allowed(&scope, f);
                    let within = |f: &str| NAMES.iter().any(|p| {
                        let p = Username::parse(p).unwrap();
                        scope.allows(&p)
                            && (f == format!("platone/{p}") || f.starts_with(&format!("platone/{p}/")))
                    });
                    prop_assert!(!mosquitto || within(f), "{} may not read {f} on Mosquitto", u.username);
                    prop_assert!(!embedded || within(f), "{} may not read {f} embedded", u.username);
                    let on_producer = matches!(
                        FilterScope::of(f),
                        Ok(FilterScope::Producer(p)) if p.as_str().starts_with("producer")
                    );
                    if on_producer {
                        prop_assert_eq!(mosquitto, embedded, "{} subscribing {}", u.username, f);
                    }
                }
            }
        }
    }

    fn grant(consumer: &str, producer: &str, expires_in_secs: Option<i64>) -> Subscription {
        let now = Utc::now();
        let mut s = Subscription::request(
            Username::parse(consumer).unwrap(),
            &Topic::parse(&format!("platone/{producer}")).unwrap(),
            now,
        );
        s.status = bal_core::SubscriptionStatus::Accepted;
        s.expires_at = expires_in_secs.map(|e| now + chrono::Duration::seconds(e));
        s
    }

    fn world() -> (Vec<User>, Vec<Subscription>) {
        let users = vec![
            user("admin", Role::Admin),
            user("producer1", Role::Producer),
            user("producer2", Role::Producer),
            user("consumer1", Role::Consumer),
            user("consumer2", Role::Consumer),
        ];
        let grants = vec![
            grant("consumer1", "producer1", None),
            grant("consumer2", "producer2", Some(-1)),
        ];
        (users, grants)
    }

    fn topics(d: &Desired, user: &str, acltype: &str) -> Vec<String> {
        d[user]
            .iter()
            .filter(|a| a.acltype == acltype)
            .map(|a| a.topic.clone())
            .collect()
    }

    /// Applies commands to an `Actual` the way dynsec would, to check that a plan converges.
    fn apply(actual: &mut Actual, commands: &[Value]) {
        for c in commands {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            match c["command"].as_str().unwrap() {
                "setDefaultACLAccess" => {
                    for a in c["acls"].as_array().unwrap() {
                        actual.default_access.insert(
                            a["acltype"].as_str().unwrap().into(),
                            a["allow"].as_bool().unwrap(),
                        );
                    }
                }
                "deleteClient" => {
                    actual.clients.remove(&s("username"));
                }
                "createClient" => {
                    actual.clients.insert(s("username"), Default::default());
                }
                "addClientRole" => actual
                    .clients
                    .get_mut(&s("username"))
                    .unwrap()
                    .0
                    .push(s("rolename")),
                "removeClientRole" => actual
                    .clients
                    .get_mut(&s("username"))
                    .unwrap()
                    .0
                    .retain(|r| *r != s("rolename")),
                "removeGroupClient" => actual
                    .clients
                    .get_mut(&s("username"))
                    .unwrap()
                    .1
                    .retain(|g| *g != s("groupname")),
                "createRole" => {
                    actual.roles.insert(s("rolename"), vec![]);
                }
                "deleteRole" => {
                    actual.roles.remove(&s("rolename"));
                }
                "addRoleACL" => actual
                    .roles
                    .get_mut(&s("rolename"))
                    .unwrap()
                    .push(ActualAcl {
                        acl: Acl::allow(&s("acltype"), s("topic")),
                        allow: true,
                        priority: 0,
                    }),
                "removeRoleACL" => actual
                    .roles
                    .get_mut(&s("rolename"))
                    .unwrap()
                    .retain(|a| a.acl != Acl::allow(&s("acltype"), s("topic"))),
                other => panic!("unexpected command {other}"),
            }
        }
    }

    #[test]
    fn each_role_gets_exactly_its_rules() {
        let (users, grants) = world();
        let d = desired(&users, &grants, Utc::now());
        assert_eq!(
            topics(&d, "producer1", SEND),
            ["platone/producer1/#", "setpoints/producer1/+/ack"]
        );
        assert_eq!(
            topics(&d, "producer1", SUBSCRIBE),
            ["platone/producer1/#", "setpoints/producer1/#"]
        );
        assert_eq!(
            topics(&d, "producer1", RECEIVE),
            ["platone/producer1/#", "setpoints/producer1/#"]
        );
        assert!(
            topics(&d, "consumer1", SEND).is_empty(),
            "consumers never publish"
        );
        assert_eq!(topics(&d, "consumer1", RECEIVE), ["platone/producer1/#"]);
        assert!(d["consumer2"].is_empty(), "an expired grant gives nothing");
        assert!(topics(&d, "admin", SEND).is_empty());
        assert_eq!(
            topics(&d, "admin", SUBSCRIBE),
            ["platone/producer1/#", "platone/producer2/#"]
        );
        for acls in d.values() {
            // Set points are only ever a producer's own (above); readings one producer a rule.
            for a in acls.iter().filter(|a| !a.topic.starts_with("setpoints/")) {
                assert!(
                    !a.topic.contains('+') && a.topic.starts_with("platone/"),
                    "{a:?}"
                );
                assert_eq!(
                    a.topic.matches('/').count(),
                    2,
                    "one producer per rule: {a:?}"
                );
            }
        }
    }

    #[test]
    fn a_control_grant_lets_its_holder_read_and_send_nothing_on_the_broker() {
        let (users, _) = world();
        let mut control = grant("consumer2", "producer1", None);
        control.access = bal_core::GrantAccess::Control;
        let d = desired(&users, &[control], Utc::now());
        assert!(d["consumer2"].is_empty(), "{:?}", d["consumer2"]);
    }

    #[test]
    fn an_empty_broker_is_built_and_a_second_plan_is_empty() {
        let (users, grants) = world();
        let d = desired(&users, &grants, Utc::now());
        let mut actual = Actual::default();
        let commands = plan(&d, &actual, "bal-admin");
        assert_eq!(commands[0]["command"], "setDefaultACLAccess");
        apply(&mut actual, &commands);
        assert!(plan(&d, &actual, "bal-admin").is_empty());
        assert_eq!(actual.clients.len(), users.len());
        assert_eq!(actual.clients["consumer1"].0, ["bal-user-consumer1"]);
    }

    #[test]
    fn a_stale_broker_is_repaired_and_strangers_removed_but_the_admin_kept() {
        let (users, mut grants) = world();
        let d = desired(&users, &grants, Utc::now());
        let mut actual = Actual::default();
        let commands = plan(&d, &actual, "bal-admin");
        apply(&mut actual, &commands);
        // Tampering: a stranger, a leftover role, an extra role and a group on a user, a deny
        // entry, and the admin's own role (which must survive).
        actual
            .clients
            .insert("bal-admin".into(), (vec!["admin".into()], vec![]));
        actual.roles.insert("admin".into(), vec![]);
        actual.clients.insert("intruder".into(), (vec![], vec![]));
        actual.roles.insert("bal-user-gone".into(), vec![]);
        let c1 = actual.clients.get_mut("consumer1").unwrap();
        c1.0.push("admin".into());
        c1.1.push("everyone".into());
        actual
            .roles
            .get_mut("bal-user-consumer2")
            .unwrap()
            .push(ActualAcl {
                acl: Acl::allow(RECEIVE, "platone/producer1/#".into()),
                allow: true,
                priority: 5,
            });
        actual.default_access.insert("subscribe".into(), true);
        // and a revocation
        grants.clear();
        let d = desired(&users, &grants, Utc::now());
        let commands = plan(&d, &actual, "bal-admin");
        let first_add = commands
            .iter()
            .position(|c| c["command"].as_str().unwrap().starts_with("add"))
            .unwrap_or(commands.len());
        let last_removal = commands
            .iter()
            .rposition(|c| {
                let n = c["command"].as_str().unwrap();
                n.starts_with("remove") || n.starts_with("delete")
            })
            .unwrap();
        assert!(
            last_removal < first_add,
            "removals come first: {commands:#?}"
        );
        apply(&mut actual, &commands);
        assert!(plan(&d, &actual, "bal-admin").is_empty());
        let sender = sender_plan(&actual, "bal-admin");
        assert_eq!(sender.last().unwrap()["command"], "addClientRole");
        apply(&mut actual, &sender);
        assert!(sender_plan(&actual, "bal-admin").is_empty());
        assert!(plan(&d, &actual, "bal-admin").is_empty());
        assert!(!actual.clients.contains_key("intruder"));
        assert!(!actual.roles.contains_key("bal-user-gone"));
        assert_eq!(
            actual.clients["bal-admin"].0,
            ["admin", SETPOINT_SENDER_ROLE],
            "the admin keeps its role and also sends set points"
        );
        assert_eq!(
            actual.roles[SETPOINT_SENDER_ROLE],
            [ActualAcl {
                acl: Acl::allow(SEND, "setpoints/+/+".into()),
                allow: true,
                priority: 0
            }]
        );
        assert!(actual.roles.contains_key("admin"));
        assert_eq!(
            actual.clients["consumer1"],
            (vec!["bal-user-consumer1".into()], vec![])
        );
        assert!(actual.roles["bal-user-consumer1"].is_empty(), "revoked");
        assert!(actual.roles["bal-user-consumer2"].is_empty());
        assert_eq!(actual.default_access.get("subscribe"), Some(&false));
    }

    #[test]
    fn broker_replies_are_read() {
        let clients = json!({"clients": [{"username": "p", "roles": [{"rolename": "bal-user-p"}], "groups": [{"groupname": "g"}]}]});
        let roles = json!({"roles": [{"rolename": "bal-user-p", "acls": [{"acltype": SEND, "topic": "platone/p/#", "priority": 0, "allow": true}]}]});
        let default = json!({"acls": [{"acltype": "subscribe", "allow": false}]});
        let a = Actual::from_replies(&clients, &roles, &default);
        assert_eq!(
            a.clients["p"],
            (vec!["bal-user-p".into()], vec!["g".into()])
        );
        assert_eq!(a.roles["bal-user-p"][0].acl.topic, "platone/p/#");
        assert!(!a.default_access["subscribe"]);
    }
}
