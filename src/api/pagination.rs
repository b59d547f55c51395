//! Lists: the `limit` a client may ask for, the cursor (`after` / `before`: an item's id) it
//! pages from, and the one extra row fetched to learn whether there is a next page.

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

/// The cursor `name` in its canonical form (ids are lower-case hyphenated UUIDs; a list pages
/// by comparing them), or 400 `invalid_query` if it is not an id at all: compared as it
/// stands, `after=zzz` would sort after every id and give the first page again, or none.
pub fn cursor(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    canonical_id(value, || {
        format!("{name} must be the id of an item from a list")
    })
}

/// An id given as a filter (`email_id=`), in its canonical form, or 400 `invalid_query`.
pub fn id(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    canonical_id(value, || format!("{name} must be an id"))
}

fn canonical_id(value: Option<String>, message: impl Fn() -> String) -> ApiResult<Option<String>> {
    value
        .map(|v| {
            uuid::Uuid::parse_str(&v)
                .map(|id| id.hyphenated().to_string())
                .map_err(|_| ApiError::bad_request("invalid_query", message()))
        })
        .transpose()
}

/// Rows were fetched with `limit + 1`: drops the extra one and says whether it was there.
pub fn trim_page<T>(rows: &mut Vec<T>, limit: i64) -> bool {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    has_more
}
