//! Delivery statistics: counters and rates per period and group, and bounces by class.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::bounce::BounceSubType;

/// Counters and rates of one period (or the totals). Which keys appear follows `metrics=`;
/// a rate is null when its denominator is 0.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatsMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<i64>,
    /// Null when no delivery report came in the window (a relay that sends none): Herald
    /// cannot know, and does not say 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub delivered: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_delayed: Option<i64>,
    /// The three bounce counters together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounced: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounced_permanent: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounced_transient: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounced_undetermined: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complained: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canceled: Option<i64>,
    /// delivered / sent; null when delivered is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub delivery_rate: Option<Option<f64>>,
    /// bounced / sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub bounce_rate: Option<Option<f64>>,
    /// complained / sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub complaint_rate: Option<Option<f64>>,
}

/// One period of one group: its label, the group's dimensions (those of `group_by`), its
/// metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsPeriod {
    /// `2026-12-06` (day), `2026-12-06T14:00` (hour), `2026-W49` (week), `2026-12` (month).
    pub period: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_domain: Option<String>,
    #[serde(flatten)]
    pub metrics: StatsMetrics,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// Always `stats`.
    #[schema(value_type = String, example = "stats")]
    pub object: &'static str,
    pub start: String,
    pub end: String,
    #[schema(value_type = String)]
    pub granularity: &'static str,
    pub timezone: String,
    #[schema(value_type = Vec<String>)]
    pub group_by: Vec<&'static str>,
    pub totals: StatsMetrics,
    pub data: Vec<StatsPeriod>,
}

/// One bounce class's count.
#[derive(Debug, Serialize, ToSchema)]
pub struct BounceCountResponse {
    /// `permanent`, `transient` or `undetermined`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = BounceSubType)]
    pub sub_type: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BounceStatsResponse {
    /// Always `stats`.
    #[schema(value_type = String, example = "stats")]
    pub object: &'static str,
    pub start: String,
    pub end: String,
    pub bounces: Vec<BounceCountResponse>,
    /// Addresses on the project's suppression list now.
    pub active_suppressions: i64,
}

impl utoipa::PartialSchema for BounceSubType {
    /// Why a recipient bounced, by what an operator does next (see the table in
    /// docs/guide.md); only permanent `no_email` and `mailbox_disabled` add a suppression by
    /// themselves. The classifier's own list.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "Why a recipient bounced, by what an operator does next (see the table in \
                 docs/guide.md); only permanent `no_email` and `mailbox_disabled` add a \
                 suppression by themselves.",
            ))
            .enum_values(Some(BounceSubType::ALL.iter().map(|s| s.as_str())))
            .into()
    }
}

impl ToSchema for BounceSubType {}
