//! The 1000 ImageNet-1k class names in label order (the classes of the official ARPG
//! checkpoints) and their synonyms, from `assets/imagenet_classes.txt` (its header names the
//! public lists they come from): one class per line, the name shown first.

/// Each class's names, index = label: the name shown, then its synonyms.
pub fn classes() -> Vec<Vec<&'static str>> {
    include_str!("../../assets/imagenet_classes.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(", ").map(str::trim).collect())
        .collect()
}

/// The name shown for each class, index = label.
pub fn class_names() -> Vec<&'static str> {
    classes().into_iter().map(|c| c[0]).collect()
}

/// The label a name stands for: the name shown or any synonym, ignoring case. An ambiguous name
/// (a synonym of several classes) or an unknown one is an error that lists the candidates or
/// the closest names.
pub fn class_of(name: &str) -> Result<usize, String> {
    let classes = classes();
    let wanted = name.trim().to_lowercase();
    // The name shown wins over a synonym ("crane (bird)", "maillot").
    if let Some(i) = classes.iter().position(|c| c[0].to_lowercase() == wanted) {
        return Ok(i);
    }
    let hits: Vec<usize> = (0..classes.len())
        .filter(|&i| classes[i].iter().any(|s| s.to_lowercase() == wanted))
        .collect();
    let list = |ids: &[usize]| {
        ids.iter()
            .map(|&i| format!("\"{}\" ({i})", classes[i][0]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => {
            let closest = closest(&classes, &wanted);
            Err(format!(
                "unknown class `{name}`; closest: {} (or give the index 0..999)",
                list(&closest)
            ))
        }
        many => Err(format!(
            "`{name}` names several classes: {}; give the name shown or the index",
            list(many)
        )),
    }
}

/// Up to five classes whose names are nearest `wanted` (lowercase): names containing it first,
/// then by edit distance.
fn closest(classes: &[Vec<&str>], wanted: &str) -> Vec<usize> {
    let mut scored: Vec<(usize, usize)> = classes
        .iter()
        .enumerate()
        .map(|(i, names)| {
            let best = names
                .iter()
                .map(|n| {
                    let n = n.to_lowercase();
                    if n.contains(wanted) || wanted.contains(n.as_str()) {
                        0
                    } else {
                        edit_distance(&n, wanted)
                    }
                })
                .min()
                .unwrap_or(usize::MAX);
            (best, i)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, i)| i).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_distinct_names_in_label_order_with_synonyms() {
        let names = class_names();
        assert_eq!(names.len(), 1000);
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), 1000);
        assert_eq!((names[0], names[999]), ("tench", "toilet tissue"));
        assert_eq!(class_of("golden retriever"), Ok(207));
        assert_eq!(class_of("Tiger"), Ok(292));
        assert_eq!(class_of("tabby cat"), Ok(281), "a synonym");
        assert_eq!(class_of("crane (machine)"), Ok(517));
        let ambiguous = class_of("crane").expect_err("two cranes");
        assert!(
            ambiguous.contains("(134)") && ambiguous.contains("(517)"),
            "{ambiguous}"
        );
        let unknown = class_of("golden retreiver").expect_err("typo");
        assert!(unknown.contains("\"golden retriever\" (207)"), "{unknown}");
    }
}
