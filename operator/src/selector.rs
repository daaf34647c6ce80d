//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), evaluated against a
//! node's labels exactly as the API server's `labels.Selector` does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Why a selector cannot be evaluated (reported on the VfPool, which then matches nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("nodeSelector.matchExpressions[{index}]: operator `{operator}` is not one of In, NotIn, Exists, DoesNotExist")]
    UnknownOperator { index: usize, operator: String },
    #[error("nodeSelector.matchExpressions[{index}]: `{operator}` needs at least one value")]
    MissingValues { index: usize, operator: String },
    #[error("nodeSelector.matchExpressions[{index}]: `{operator}` takes no values")]
    UnexpectedValues { index: usize, operator: String },
}

/// Whether `labels` satisfy `selector`. An empty selector matches every node.
pub fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    validate(selector)?;
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !by_labels {
        return Ok(false);
    }
    Ok(selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            _ => value.is_none(), // DoesNotExist (validated above)
        }
    }))
}

/// Checks operators and value lists once, so that `matches` never guesses.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for (index, e) in selector.match_expressions.iter().flatten().enumerate() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        let operator = e.operator.clone();
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                return Err(SelectorError::MissingValues { index, operator })
            }
            "Exists" | "DoesNotExist" if n > 0 => {
                return Err(SelectorError::UnexpectedValues { index, operator })
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => return Err(SelectorError::UnknownOperator { index, operator }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_every_node() {
        assert_eq!(matches(&LabelSelector::default(), &labels(&[])), Ok(true));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("a", "1"), ("b", "2")])),
            ..Default::default()
        };
        assert_eq!(
            matches(&s, &labels(&[("a", "1"), ("b", "2"), ("c", "3")])),
            Ok(true)
        );
        assert_eq!(matches(&s, &labels(&[("a", "1")])), Ok(false));
        assert_eq!(matches(&s, &labels(&[("a", "1"), ("b", "3")])), Ok(false));
    }

    #[test]
    fn expressions_follow_the_api_server() {
        let l = labels(&[("zone", "a"), ("gpu", "")]);
        let check = |e: LabelSelectorRequirement| {
            matches(
                &LabelSelector {
                    match_expressions: Some(vec![e]),
                    ..Default::default()
                },
                &l,
            )
        };
        assert_eq!(check(expr("zone", "In", &["a", "b"])), Ok(true));
        assert_eq!(check(expr("zone", "In", &["b"])), Ok(false));
        assert_eq!(check(expr("zone", "NotIn", &["b"])), Ok(true));
        assert_eq!(check(expr("missing", "NotIn", &["b"])), Ok(true));
        assert_eq!(check(expr("gpu", "Exists", &[])), Ok(true));
        assert_eq!(check(expr("gpu", "DoesNotExist", &[])), Ok(false));
        assert!(matches!(
            check(expr("zone", "Near", &["a"])),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(matches!(
            check(expr("zone", "In", &[])),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            check(expr("zone", "Exists", &["a"])),
            Err(SelectorError::UnexpectedValues { .. })
        ));
    }
}
