//! Lists: the `limit` a client may ask for, and the one extra row fetched to learn whether
//! there is a next page.

use super::error::{ApiError, ApiResult};

/// `requested` (or `default`) if it is between 1 and `max`; 400 `invalid_query` otherwise.
pub fn page_size(requested: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {max}"),
        ))
    }
}

/// Rows were fetched with `limit + 1`: drops the extra one and says whether it was there.
pub fn trim_page<T>(rows: &mut Vec<T>, limit: i64) -> bool {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    has_more
}
