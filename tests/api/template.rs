//! `template.yaml` and the local stack agree: one source of truth for names, key schemas,
//! indexes, queue settings, routes and functions (infra/src/resources.rs and routes.rs).

use std::collections::BTreeSet;
use std::path::PathBuf;

use devstack::resources::{self, TABLE};
use devstack::routes::ROUTES;
use serde_yaml::Value;
use shared::domain::retention::{self, RetentionPolicy};

fn template() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The value under a CloudFormation short-form tag (`!Sub "..."`), or the value itself.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn s(v: &Value) -> String {
    match untag(v) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The arguments of an intrinsic function in either form: `!If [...]` (a tagged value) or
/// `{ "Fn::If": [...] }` (`{ Ref: ... }` for `Ref`); `None` for anything else.
fn intrinsic<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    if let Value::Tagged(t) = v {
        return (t.tag == name).then_some(&t.value);
    }
    let long = if name == "Ref" {
        name.to_string()
    } else {
        format!("Fn::{name}")
    };
    v.as_mapping().filter(|m| m.len() == 1)?.get(long.as_str())
}

/// What a `!Ref` refers to.
fn ref_name(v: &Value) -> Option<String> {
    intrinsic(v, "Ref").map(s)
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    t["Resources"]
        .get(id)
        .unwrap_or_else(|| panic!("template has no {id}"))
}

fn key_pairs(schema: &Value) -> Vec<(String, String)> {
    schema
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| (s(&k["AttributeName"]), s(&k["KeyType"])))
        .collect()
}

#[test]
fn template_resources_match_local_provisioning() {
    let t = template();
    let table = &resource(&t, "Table")["Properties"];
    assert!(s(&table["TableName"]).ends_with(&format!("-{}", TABLE.suffix)));
    assert_eq!(
        key_pairs(&table["KeySchema"]),
        vec![
            (TABLE.hash.0.to_string(), "HASH".into()),
            (TABLE.range.0.to_string(), "RANGE".into())
        ]
    );
    let defined: BTreeSet<(String, String)> = table["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (s(&a["AttributeName"]), s(&a["AttributeType"])))
        .collect();
    let mut expected = BTreeSet::new();
    for (name, ty) in [TABLE.hash, TABLE.range]
        .into_iter()
        .chain(TABLE.indexes.iter().flat_map(|i| [i.hash, i.range]))
    {
        expected.insert((name.to_string(), ty.to_string()));
    }
    assert_eq!(defined, expected);
    let gsis = table["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(gsis.len(), TABLE.indexes.len());
    for idx in TABLE.indexes {
        let g = gsis
            .iter()
            .find(|g| s(&g["IndexName"]) == idx.name)
            .unwrap_or_else(|| panic!("no index {}", idx.name));
        assert_eq!(
            key_pairs(&g["KeySchema"]),
            vec![
                (idx.hash.0.to_string(), "HASH".into()),
                (idx.range.0.to_string(), "RANGE".into())
            ]
        );
        assert_eq!(s(&g["Projection"]["ProjectionType"]), idx.projection);
    }
    assert_eq!(
        s(&table["TimeToLiveSpecification"]["AttributeName"]),
        TABLE.ttl_attribute
    );

    let bucket = &resource(&t, "ContentBucket")["Properties"];
    assert!(s(&bucket["BucketName"]).ends_with(&format!("-{}", resources::BUCKET_SUFFIX)));
    let queue = &resource(&t, "GenerationQueue")["Properties"];
    assert!(s(&queue["QueueName"]).ends_with(&format!("-{}", resources::QUEUE_SUFFIX)));
    assert_eq!(
        s(&queue["VisibilityTimeout"]),
        resources::QUEUE_VISIBILITY_SECS.to_string()
    );
    assert_eq!(
        s(&queue["RedrivePolicy"]["maxReceiveCount"]),
        resources::MAX_RECEIVE_COUNT.to_string()
    );
    let dlq = &resource(&t, "GenerationDLQ")["Properties"];
    assert!(s(&dlq["QueueName"]).ends_with(&format!("-{}", resources::DLQ_SUFFIX)));
    assert_eq!(
        s(&dlq["MessageRetentionPeriod"]),
        resources::DLQ_RETENTION_SECS.to_string()
    );
    let export = &resource(&t, "ExportQueue")["Properties"];
    assert!(s(&export["QueueName"]).ends_with(&format!("-{}", resources::EXPORT_QUEUE_SUFFIX)));
    assert_eq!(
        s(&export["VisibilityTimeout"]),
        resources::EXPORT_QUEUE_VISIBILITY_SECS.to_string()
    );
    let export_dlq = &resource(&t, "ExportDLQ")["Properties"];
    assert!(s(&export_dlq["QueueName"]).ends_with(&format!("-{}", resources::EXPORT_DLQ_SUFFIX)));
    let worker = &resource(&t, "ExportFunction")["Properties"];
    let timeout: u32 = s(&worker["Timeout"]).parse().unwrap();
    assert_eq!(timeout, resources::EXPORT_TIMEOUT_SECS);
    assert!(resources::EXPORT_QUEUE_VISIBILITY_SECS >= 6 * timeout);
    let bus = &resource(&t, "EventBus")["Properties"];
    assert!(s(&bus["Name"]).ends_with(&format!("-{}", resources::BUS_SUFFIX)));

    let generate = &resource(&t, "GenerateFunction")["Properties"];
    let timeout: u32 = s(&generate["Timeout"]).parse().unwrap();
    assert_eq!(timeout, resources::GENERATE_TIMEOUT_SECS);
    assert!(
        resources::QUEUE_VISIBILITY_SECS >= 6 * timeout,
        "visibility timeout at least 6x the function timeout"
    );
    let schedule = &resource(&t, "RetentionSweepFunction")["Properties"]["Events"]["Schedule"]
        ["Properties"]["Schedule"];
    assert_eq!(
        s(schedule),
        format!("rate({} minutes)", resources::SWEEP_EVERY_SECS / 60)
    );
}

#[test]
fn template_routes_match_the_dev_host() {
    let t = template();
    let mut declared = BTreeSet::new();
    for (id, res) in t["Resources"].as_mapping().unwrap() {
        let Some(events) = res["Properties"].get("Events").and_then(Value::as_mapping) else {
            continue;
        };
        for (_, ev) in events {
            if s(&ev["Type"]) != "HttpApi" {
                continue;
            }
            let p = &ev["Properties"];
            let public = p
                .get("Auth")
                .map(|a| s(&a["Authorizer"]) == "NONE")
                .unwrap_or(false);
            declared.insert((s(&p["Method"]), s(&p["Path"]), s(id), !public));
        }
    }
    let hosted: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_string(),
                r.function.logical_id().to_string(),
                r.authorized,
            )
        })
        .collect();
    assert_eq!(declared, hosted);
}

#[test]
fn c3_every_function_crate_is_deployed_as_an_arm64_cargo_lambda_function_with_30_day_logs() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(s(&globals["Runtime"]), "provided.al2023");
    assert_eq!(s(&globals["Architectures"][0]), "arm64");
    let functions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../functions");
    for entry in std::fs::read_dir(functions).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (id, res) = t["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .find(|(_, r)| {
                r.get("Metadata")
                    .map(|m| s(&m["BuildProperties"]["Binary"]) == name)
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("functions/{name} is not in template.yaml"));
        assert_eq!(s(&res["Type"]), "AWS::Serverless::Function");
        assert_eq!(s(&res["Metadata"]["BuildMethod"]), "rust-cargolambda");
        let log_ref = s(&res["Properties"]["LoggingConfig"]["LogGroup"]);
        let logs = resource(&t, &log_ref);
        assert_eq!(s(&logs["Properties"]["RetentionInDays"]), "30", "{id:?}");
    }
}

#[test]
fn r1_template_lifecycle_never_expires_content_before_its_retention() {
    let t = template();
    let retention_days = &t["Parameters"]["RetentionDays"];
    let allowed: Vec<String> = retention_days["AllowedValues"]
        .as_sequence()
        .expect("RetentionDays lists its AllowedValues")
        .iter()
        .map(s)
        .collect();
    assert!(allowed.contains(&s(&retention_days["Default"])));
    assert!(allowed.iter().any(|v| v == "until_deleted"));

    // One backstop per numeric retention, after it.
    let backstop = &t["Mappings"]["ContentBackstop"];
    let mut numeric = 0;
    for value in &allowed {
        let policy = RetentionPolicy::parse(value).unwrap_or_else(|e| {
            panic!("RetentionDays allows {value:?}, the functions refuse it: {e}")
        });
        let Ok(days) = value.parse::<u32>() else {
            assert_eq!(policy.content_days(), None, "{value}");
            continue;
        };
        assert_eq!(policy.content_days(), Some(days));
        numeric += 1;
        let entry = backstop
            .get(value.as_str())
            .unwrap_or_else(|| panic!("no ContentBackstop entry for {value}"));
        let backstop_days: u32 = s(&entry["Days"]).parse().unwrap();
        assert_eq!(backstop_days, retention::backstop_days(days), "{value}");
        assert!(
            backstop_days > days,
            "the backstop for {value} days is before the retention"
        );
    }
    assert!(numeric > 0);
    assert_eq!(
        backstop.as_mapping().unwrap().len(),
        numeric,
        "one ContentBackstop entry per numeric retention"
    );

    // No backstop at all under until_deleted.
    let keep = intrinsic(&t["Conditions"]["KeepUntilDeleted"], "Equals")
        .expect("KeepUntilDeleted is an Fn::Equals");
    assert_eq!(ref_name(&keep[0]).as_deref(), Some("RetentionDays"));
    assert_eq!(s(&keep[1]), "until_deleted");
    let rules = resource(&t, "ContentBucket")["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .unwrap();
    let guarded: Vec<&Value> = rules.iter().filter_map(|r| intrinsic(r, "If")).collect();
    // The backstops: content under users/, and the public copies of published images.
    let mut prefixes = vec![];
    for branches in guarded {
        assert_eq!(s(&branches[0]), "KeepUntilDeleted");
        assert_eq!(
            ref_name(&branches[1]).as_deref(),
            Some("AWS::NoValue"),
            "no backstop rule under until_deleted"
        );
        // Tagged objects only (a legal hold untags what it covers), retention + 2.
        let rule = &branches[2];
        assert_eq!(s(&rule["Status"]), "Enabled");
        prefixes.push(s(&rule["Prefix"]));
        let tags: Vec<(String, String)> = rule["TagFilters"]
            .as_sequence()
            .expect("the backstop filters on a tag")
            .iter()
            .map(|f| (s(&f["Key"]), s(&f["Value"])))
            .collect();
        let (key, value) = shared::objects::BACKSTOP_TAG;
        assert_eq!(tags, vec![(key.to_string(), value.to_string())]);
        let lookup = intrinsic(&rule["ExpirationInDays"], "FindInMap")
            .expect("the backstop's expiry comes from ContentBackstop");
        assert_eq!(s(&lookup[0]), "ContentBackstop");
        assert_eq!(ref_name(&lookup[1]).as_deref(), Some("RetentionDays"));
        assert_eq!(s(&lookup[2]), "Days");
    }
    prefixes.sort();
    assert_eq!(
        prefixes,
        ["public/", "users/"],
        "each backstop is wrapped in Fn::If"
    );

    // No other rule expires anything.
    for r in rules.iter().filter(|r| intrinsic(r, "If").is_none()) {
        let keys = r.as_mapping().unwrap().keys().map(s);
        for k in keys {
            assert!(
                !k.contains("Expiration") && !k.contains("Transition"),
                "lifecycle rule {} has {k}",
                s(&r["Id"])
            );
        }
    }
}

#[test]
fn r3_template_backup_window_is_at_most_the_published_one() {
    let t = template();
    let param = &t["Parameters"]["BackupRecoveryDays"];
    assert_eq!(
        s(&param["Default"]),
        shared::config::DEFAULT_BACKUP_RECOVERY_DAYS.to_string()
    );
    let min: u32 = s(&param["MinValue"]).parse().unwrap();
    let max: u32 = s(&param["MaxValue"]).parse().unwrap();
    assert!(min >= 1);
    assert!(
        max <= 29,
        "point-in-time recovery keeps deleted data at most 29 days here"
    );
    assert!((min..=max).contains(&shared::config::DEFAULT_BACKUP_RECOVERY_DAYS));

    // The table keeps exactly the window the functions publish.
    let pitr = &resource(&t, "Table")["Properties"]["PointInTimeRecoverySpecification"];
    assert_eq!(s(&pitr["PointInTimeRecoveryEnabled"]), "true");
    assert_eq!(
        ref_name(&pitr["RecoveryPeriodInDays"]).as_deref(),
        Some("BackupRecoveryDays")
    );
    assert_eq!(
        ref_name(&t["Globals"]["Function"]["Environment"]["Variables"]["BACKUP_RECOVERY_DAYS"])
            .as_deref(),
        Some("BackupRecoveryDays")
    );
}

#[test]
fn sweep_runs_one_at_a_time_without_async_retries() {
    let t = template();
    let sweep = &resource(&t, "RetentionSweepFunction")["Properties"];
    assert_eq!(s(&sweep["ReservedConcurrentExecutions"]), "1");
    assert_eq!(s(&sweep["EventInvokeConfig"]["MaximumRetryAttempts"]), "0");
}

/// The template refuses what the functions refuse at start-up: every value a parameter allows
/// (each of its `AllowedValues`, a `Number`'s `MinValue` and `MaxValue`, a default) gives a
/// configuration the functions accept; every `Number` is bounded; settings the functions need
/// together are asserted together in `Rules`.
#[test]
fn template_parameters_allow_only_what_the_functions_accept() {
    let t = template();
    // Every variable set from a parameter, in Globals or in a function's own environment.
    let mut vars: Vec<(Value, Value)> = t["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (_, res) in t["Resources"].as_mapping().unwrap() {
        if let Some(env) = res["Properties"]["Environment"]["Variables"].as_mapping() {
            vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let base = [
        ("TABLE_NAME", "t"),
        ("BUCKET_NAME", "b"),
        ("GENERATION_QUEUE_URL", "q"),
        ("GENERATION_DLQ_URL", "d"),
        ("EVENT_BUS_NAME", "e"),
        ("OPENAI_API_KEY", "sk-set-by-the-rule"),
    ];
    let mut checked = 0;
    for (name, param) in t["Parameters"].as_mapping().unwrap() {
        let name = s(name);
        let Some(var) = vars
            .iter()
            .find(|(_, v)| ref_name(v).as_deref() == Some(name.as_str()))
            .map(|(k, _)| s(k))
        else {
            continue;
        };
        let mut values: Vec<String> = Vec::new();
        if let Some(allowed) = param["AllowedValues"].as_sequence() {
            values.extend(allowed.iter().map(s));
        }
        if s(&param["Type"]) == "Number" {
            let (min, max) = (param.get("MinValue"), param.get("MaxValue"));
            assert!(
                min.is_some() && max.is_some(),
                "{name} is a Number without MinValue and MaxValue"
            );
            values.push(s(min.unwrap()));
            values.push(s(max.unwrap()));
        }
        if let Some(default) = param.get("Default") {
            values.push(s(default));
        }
        for value in values {
            let config = shared::app::Settings::from_lookup(shared::app::ports::ALL, &|k| {
                if k == var {
                    return Some(value.clone());
                }
                base.iter()
                    .find(|(b, _)| *b == k)
                    .map(|(_, v)| v.to_string())
            });
            assert!(
                config.is_ok(),
                "{name}={value:?} deploys, but the functions refuse {var}: {:?}",
                config.err()
            );
            checked += 1;
        }
    }
    // 46 values today, the per-function parameters (provider, moderation) included.
    assert!(checked >= 46, "{checked}");
    // RATE_LIMITS: the pattern admits exactly what the functions parse.
    let pattern =
        regex_lite::Regex::new(&s(&t["Parameters"]["RateLimits"]["AllowedPattern"])).unwrap();
    for (value, ok) in [
        ("generate=20/60", true),
        (
            "generate=20/60,gallery=1000000/86400,child_report=1/1",
            true,
        ),
        ("generate=0/60", false),
        ("generate=20/86401", false),
        ("generate=20/0", false),
        ("teleport=1/1", false),
        ("generate=1000001/60", false),
        ("export=1/86399", true),
        ("export=1/86000", true),
    ] {
        assert_eq!(pattern.is_match(value), ok, "{value}");
        let parsed = shared::limits::RateLimits::parse(Some(value), 5);
        assert_eq!(parsed.is_ok(), ok, "{value}");
    }
    // MODERATION_BLOCKLIST: what the template admits (terms) the functions parse.
    let pattern =
        regex_lite::Regex::new(&s(&t["Parameters"]["ModerationBlocklist"]["AllowedPattern"]))
            .unwrap();
    for (value, ok) in [
        ("weapons:pipe bomb;gore:beheading", true),
        ("pipe bomb", true),
        ("x:!!!", false),
        ("gore:/(/", false),
        (";;", false),
    ] {
        assert_eq!(pattern.is_match(value), ok, "{value}");
        if ok {
            assert!(
                shared::moderation::Blocklist::parse(value).is_ok(),
                "{value}"
            );
        }
    }
    let rules = format!("{:?}", t["Rules"]);
    for together in [
        ["JwtIssuer", "JwtAudience"],
        ["OpenAiApiKey", "ModerationProvider"],
        ["OpenAiApiKey", "ImageProvider"],
        ["StripeSecretKeyParam", "StripeWebhookSecretParam"],
    ] {
        let asserted = t["Rules"].as_mapping().unwrap().values().any(|r| {
            let r = format!("{r:?}");
            together.iter().all(|p| r.contains(p))
        });
        assert!(asserted, "no rule asserts {together:?} together: {rules}");
    }
}

/// A function's `PORTS` by its binary's name.
fn function_ports(binary: &str) -> u32 {
    match binary {
        "account" => account::PORTS,
        "generations" => generations::PORTS,
        "public" => public::PORTS,
        "generate" => generate::PORTS,
        "retention-sweep" => retention_sweep::PORTS,
        "admin" => admin::PORTS,
        "stripe-webhook" => stripe_webhook::PORTS,
        "billing" => billing::PORTS,
        "uploads" => uploads::PORTS,
        "images" => images::PORTS,
        "gallery" => gallery::PORTS,
        "exports" => exports::PORTS,
        "export" => export::PORTS,
        other => panic!("no function crate for {other}"),
    }
}

#[test]
fn each_function_is_configured_and_permitted_for_exactly_the_ports_its_binary_names() {
    use shared::app::ports;
    let t = template();
    let globals: Vec<String> = t["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(s)
        .collect();
    // The common settings only: a port's settings in Globals would reach every function.
    for port_setting in [
        "BUCKET_NAME",
        "USER_POOL_ID",
        "GENERATION_QUEUE_URL",
        "GENERATION_DLQ_URL",
        "EXPORT_QUEUE_URL",
        "EVENT_BUS_NAME",
        "IMAGE_PROVIDER",
        "MODERATION_PROVIDER",
        "OPENAI_API_KEY",
        "STRIPE_SECRET_KEY_PARAM",
        "STRIPE_WEBHOOK_SECRET_PARAM",
    ] {
        assert!(
            !globals.iter().any(|g| g == port_setting),
            "{port_setting} in Globals"
        );
    }
    let mut seen = 0;
    for (_, res) in t["Resources"].as_mapping().unwrap() {
        if s(&res["Type"]) != "AWS::Serverless::Function" {
            continue;
        }
        let binary = s(&res["Metadata"]["BuildProperties"]["Binary"]);
        let named = function_ports(&binary);
        let env: Vec<String> = res["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .map(|m| m.keys().map(s).collect())
            .unwrap_or_default();
        // Every statement, the conditional ones included (`!If [cond, statement, NoValue]`).
        let mut statements: Vec<(Vec<String>, String)> = Vec::new();
        for policy in res["Properties"]["Policies"].as_sequence().unwrap() {
            for st in policy["Statement"].as_sequence().unwrap() {
                let st = match intrinsic(st, "If") {
                    Some(args) => &args[1],
                    None => st,
                };
                let actions = match untag(&st["Action"]) {
                    Value::Sequence(a) => a.iter().map(s).collect(),
                    other => vec![s(other)],
                };
                statements.push((actions, serde_yaml::to_string(&st["Resource"]).unwrap()));
            }
        }
        let permits = |prefix: &str, resource: &str| {
            statements
                .iter()
                .any(|(a, r)| a.iter().any(|a| a.starts_with(prefix)) && r.contains(resource))
        };
        let checks: [(u32, &str, bool); 10] = [
            (
                ports::OBJECTS,
                "BUCKET_NAME",
                permits("s3:", "ContentBucket"),
            ),
            (
                ports::IDENTITY,
                "USER_POOL_ID",
                permits("cognito-idp:AdminDeleteUser", "UserPool"),
            ),
            (
                ports::GENERATION_QUEUE,
                "GENERATION_QUEUE_URL",
                permits("sqs:", "GenerationQueue.Arn"),
            ),
            (
                ports::DEAD_LETTERS,
                "GENERATION_DLQ_URL",
                permits("sqs:", "GenerationDLQ.Arn"),
            ),
            (
                ports::EXPORT_QUEUE,
                "EXPORT_QUEUE_URL",
                permits("sqs:SendMessage", "ExportQueue.Arn"),
            ),
            (
                ports::EVENTS,
                "EVENT_BUS_NAME",
                permits("events:PutEvents", "EventBus"),
            ),
            // The provider and moderation call third parties: settings, no AWS permission.
            (
                ports::PROVIDER,
                "IMAGE_PROVIDER",
                named & ports::PROVIDER != 0,
            ),
            (
                ports::MODERATION,
                "MODERATION_PROVIDER",
                named & ports::MODERATION != 0,
            ),
            (
                ports::PAYMENTS,
                "STRIPE_SECRET_KEY_PARAM",
                permits("ssm:GetParameter", "StripeSecretKeyParam"),
            ),
            (
                ports::WEBHOOKS,
                "STRIPE_WEBHOOK_SECRET_PARAM",
                permits("ssm:GetParameter", "StripeWebhookSecretParam"),
            ),
        ];
        for (port, setting, permitted) in checks {
            let name = ports::names(port)[0];
            let has = named & port != 0;
            assert_eq!(
                env.iter().any(|e| e == setting),
                has,
                "{binary}: names {name}: {has}, but {setting} is set: {}",
                !has
            );
            assert_eq!(
                permitted, has,
                "{binary}: names {name}: {has}, but its policy permits it: {}",
                !has
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 13);
}
