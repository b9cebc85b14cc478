//! The local stack's resources, provisioned on the AWS emulator through the real SDK. The
//! names' suffixes, key schemas, indexes and queue settings here are the single source of
//! truth that `template.yaml` must agree with (a test compares them).

use anyhow::Context;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator, LifecycleRuleFilter,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag,
};
use aws_sdk_sqs::types::QueueAttributeName;
use shared::domain::retention::{backstop_days, RetentionPolicy};
use shared::objects::BACKSTOP_TAG;

/// A key attribute: name and DynamoDB type (`S` or `N`).
pub type KeyAttr = (&'static str, &'static str);

pub struct IndexSpec {
    pub name: &'static str,
    pub hash: KeyAttr,
    pub range: KeyAttr,
    pub projection: &'static str,
}

pub struct TableSpec {
    pub suffix: &'static str,
    pub hash: KeyAttr,
    pub range: KeyAttr,
    pub indexes: &'static [IndexSpec],
    pub ttl_attribute: &'static str,
}

use shared::store::keys;

pub const TABLE: TableSpec = TableSpec {
    suffix: "main",
    hash: (keys::PK, "S"),
    range: (keys::SK, "S"),
    indexes: &[
        IndexSpec {
            name: keys::EXPIRY_INDEX,
            hash: (keys::EXP_PK, "S"),
            range: (keys::EXP_AT, "N"),
            projection: "KEYS_ONLY",
        },
        IndexSpec {
            name: keys::LEASE_INDEX,
            hash: (keys::LEASE_PK, "S"),
            range: (keys::LEASE_UNTIL, "N"),
            projection: "KEYS_ONLY",
        },
    ],
    ttl_attribute: keys::TTL,
};

pub const BUCKET_SUFFIX: &str = "content";
pub const QUEUE_SUFFIX: &str = "generation";
pub const DLQ_SUFFIX: &str = "generation-dlq";
pub const BUS_SUFFIX: &str = "events";
pub const EXPORT_QUEUE_SUFFIX: &str = "export";
pub const EXPORT_DLQ_SUFFIX: &str = "export-dlq";
/// The `export` function's timeout, and its queue's visibility timeout (6x).
pub const EXPORT_TIMEOUT_SECS: u32 = 900;
pub const EXPORT_QUEUE_VISIBILITY_SECS: u32 = 5400;
/// Deliveries before a message moves to the dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// The `generate` function's timeout, and the queue's visibility timeout (at least 6x).
pub const GENERATE_TIMEOUT_SECS: u32 = 300;
pub const QUEUE_VISIBILITY_SECS: u32 = 1800;
/// Dead letters are kept 14 days (the SQS maximum) for the sweep to refund.
pub const DLQ_RETENTION_SECS: u32 = 1_209_600;
/// The sweep's schedule (`rate(5 minutes)` in the template).
pub const SWEEP_EVERY_SECS: u64 = 300;

#[derive(Debug, Clone)]
pub struct Resources {
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub export_queue_url: String,
    pub export_queue_arn: String,
    pub bus_name: String,
    pub user_pool_id: String,
    /// The SSM parameter holding the local Stripe webhook signing secret.
    pub stripe_webhook_secret_param: String,
    /// The SSM parameter holding the stand-in's Stripe secret key.
    pub stripe_secret_key_param: String,
    /// Local only: a queue subscribed to every domain event on the bus, to watch them.
    pub events_tap_url: String,
}

fn scalar(t: &str) -> ScalarAttributeType {
    if t == "N" {
        ScalarAttributeType::N
    } else {
        ScalarAttributeType::S
    }
}

fn key(name: &str, kind: KeyType) -> anyhow::Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()?)
}

/// Creates every table, bucket, queue, DLQ, bus and the user pool, named `<prefix>-<suffix>`.
/// The bucket's lifecycle backstop follows the content retention as the template's does: tagged
/// content objects expire two days after the retention, none at all under `until_deleted`.
pub async fn provision(
    sdk: &SdkConfig,
    prefix: &str,
    retention: RetentionPolicy,
) -> anyhow::Result<Resources> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let table_name = format!("{prefix}-{}", TABLE.suffix);
    let mut attrs = vec![TABLE.hash, TABLE.range];
    for idx in TABLE.indexes {
        attrs.push(idx.hash);
        attrs.push(idx.range);
    }
    let mut create = ddb
        .create_table()
        .table_name(&table_name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(TABLE.hash.0, KeyType::Hash)?)
        .key_schema(key(TABLE.range.0, KeyType::Range)?);
    for (name, t) in attrs {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(scalar(t))
                .build()?,
        );
    }
    for idx in TABLE.indexes {
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(idx.name)
                .key_schema(key(idx.hash.0, KeyType::Hash)?)
                .key_schema(key(idx.range.0, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(idx.projection))
                        .build(),
                )
                .build()?,
        );
    }
    create.send().await.context("creating the table")?;
    ddb.update_time_to_live()
        .table_name(&table_name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TABLE.ttl_attribute)
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .context("enabling TTL")?;

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    let bucket_name = format!("{prefix}-{BUCKET_SUFFIX}");
    s3.create_bucket()
        .bucket(&bucket_name)
        .send()
        .await
        .context("creating the bucket")?;
    s3.put_public_access_block()
        .bucket(&bucket_name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .context("blocking public access")?;
    s3.put_bucket_encryption()
        .bucket(&bucket_name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
                                .build()?,
                        )
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .context("enabling default encryption")?;
    let mut lifecycle = BucketLifecycleConfiguration::builder().rules(
        LifecycleRule::builder()
            .id("abort-incomplete-uploads")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(1)
                    .build(),
            )
            .build()?,
    );
    if let Some(days) = retention.content_days() {
        lifecycle = lifecycle.rules(
            LifecycleRule::builder()
                .id("content-backstop")
                .status(ExpirationStatus::Enabled)
                .filter(
                    LifecycleRuleFilter::builder()
                        .and(
                            LifecycleRuleAndOperator::builder()
                                .prefix("users/")
                                .tags(
                                    Tag::builder()
                                        .key(BACKSTOP_TAG.0)
                                        .value(BACKSTOP_TAG.1)
                                        .build()?,
                                )
                                .build(),
                        )
                        .build(),
                )
                .expiration(
                    LifecycleExpiration::builder()
                        .days(backstop_days(days) as i32)
                        .build(),
                )
                .build()?,
        );
    }
    s3.put_bucket_lifecycle_configuration()
        .bucket(&bucket_name)
        .lifecycle_configuration(lifecycle.build()?)
        .send()
        .await
        .context("setting the lifecycle backstop")?;

    let cognito = aws_sdk_cognitoidentityprovider::Client::new(sdk);
    let user_pool_id = cognito
        .create_user_pool()
        .pool_name(format!("{prefix}-users"))
        .username_attributes(aws_sdk_cognitoidentityprovider::types::UsernameAttributeType::Email)
        .send()
        .await
        .context("creating the user pool")?
        .user_pool()
        .and_then(|p| p.id())
        .context("user pool without id")?
        .to_string();

    // The local Stripe webhook signing secret, where the function reads it on AWS: SSM.
    let stripe_webhook_secret_param = format!("/{prefix}/stripe/webhook-secret");
    aws_sdk_ssm::Client::new(sdk)
        .put_parameter()
        .name(&stripe_webhook_secret_param)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .value(format!(
            "whsec_local_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ))
        .overwrite(true)
        .send()
        .await
        .context("storing the local Stripe webhook secret")?;

    let stripe_secret_key_param = format!("/{prefix}/stripe/secret-key");
    aws_sdk_ssm::Client::new(sdk)
        .put_parameter()
        .name(&stripe_secret_key_param)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .value("sk_test_local_standin")
        .overwrite(true)
        .send()
        .await
        .context("storing the local Stripe secret key")?;

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-{DLQ_SUFFIX}"))
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )
        .send()
        .await
        .context("creating the DLQ")?
        .queue_url()
        .context("DLQ without URL")?
        .to_string();
    let dlq_arn = queue_arn(&sqs, &dlq_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    });
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-{QUEUE_SUFFIX}"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            QUEUE_VISIBILITY_SECS.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .context("creating the queue")?
        .queue_url()
        .context("queue without URL")?
        .to_string();
    let queue_arn_value = queue_arn(&sqs, &queue_url).await?;
    let export_dlq_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-{EXPORT_DLQ_SUFFIX}"))
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )
        .send()
        .await
        .context("creating the export DLQ")?
        .queue_url()
        .context("export DLQ without URL")?
        .to_string();
    let export_redrive = serde_json::json!({
        "deadLetterTargetArn": queue_arn(&sqs, &export_dlq_url).await?,
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    });
    let export_queue_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-{EXPORT_QUEUE_SUFFIX}"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            EXPORT_QUEUE_VISIBILITY_SECS.to_string(),
        )
        .attributes(
            QueueAttributeName::RedrivePolicy,
            export_redrive.to_string(),
        )
        .send()
        .await
        .context("creating the export queue")?
        .queue_url()
        .context("export queue without URL")?
        .to_string();
    let export_queue_arn = queue_arn(&sqs, &export_queue_url).await?;

    let eb = aws_sdk_eventbridge::Client::new(sdk);
    let bus_name = format!("{prefix}-{BUS_SUFFIX}");
    eb.create_event_bus()
        .name(&bus_name)
        .send()
        .await
        .context("creating the bus")?;
    let events_tap_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-events-tap"))
        .send()
        .await
        .context("creating the events tap")?
        .queue_url()
        .context("tap without URL")?
        .to_string();
    let tap_arn = queue_arn(&sqs, &events_tap_url).await?;
    eb.put_rule()
        .name(format!("{prefix}-tap"))
        .event_bus_name(&bus_name)
        .event_pattern(serde_json::json!({"source": [shared::events::SOURCE]}).to_string())
        .send()
        .await
        .context("creating the tap rule")?;
    eb.put_targets()
        .rule(format!("{prefix}-tap"))
        .event_bus_name(&bus_name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("tap")
                .arn(tap_arn)
                .build()?,
        )
        .send()
        .await
        .context("targeting the tap")?;

    Ok(Resources {
        table_name,
        bucket_name,
        queue_url,
        queue_arn: queue_arn_value,
        dlq_url,
        export_queue_url,
        export_queue_arn,
        bus_name,
        user_pool_id,
        stripe_webhook_secret_param,
        stripe_secret_key_param,
        events_tap_url,
    })
}

/// Stores a secret where the functions read it.
pub async fn store_secret(sdk: &SdkConfig, name: &str, value: &str) -> anyhow::Result<()> {
    aws_sdk_ssm::Client::new(sdk)
        .put_parameter()
        .name(name)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .value(value)
        .overwrite(true)
        .send()
        .await
        .with_context(|| format!("storing {name}"))?;
    Ok(())
}

/// A secret the provisioning stored (the stand-in signs its webhooks with it).
pub async fn read_secret(sdk: &SdkConfig, name: &str) -> anyhow::Result<String> {
    let list = shared::secrets::read_list(sdk, name).await?;
    Ok(list[0].expose().to_string())
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("reading a queue ARN")?;
    attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .context("queue without ARN")
}

impl Resources {
    /// The environment the functions get (the template sets the same variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TABLE_NAME", self.table_name.clone()),
            ("BUCKET_NAME", self.bucket_name.clone()),
            ("GENERATION_QUEUE_URL", self.queue_url.clone()),
            ("GENERATION_DLQ_URL", self.dlq_url.clone()),
            ("EXPORT_QUEUE_URL", self.export_queue_url.clone()),
            ("EVENT_BUS_NAME", self.bus_name.clone()),
            ("USER_POOL_ID", self.user_pool_id.clone()),
            (
                "STRIPE_WEBHOOK_SECRET_PARAM",
                self.stripe_webhook_secret_param.clone(),
            ),
        ]
    }
}
