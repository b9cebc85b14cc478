//! AttributeValue helpers: building and reading item attributes.

use std::collections::HashMap;

use anyhow::{anyhow, Context};
use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> anyhow::Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| anyhow!("item attribute {name} is missing or not a string"))
}

pub fn opt_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .ok_or_else(|| anyhow!("item attribute {name} is missing or not a number"))?
        .parse::<T>()
        .with_context(|| format!("item attribute {name} is not a valid number"))
}

pub fn opt_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([
        (super::keys::PK.to_string(), s(pk)),
        (super::keys::SK.to_string(), s(sk)),
    ])
}
