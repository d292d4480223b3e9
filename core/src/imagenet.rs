//! The 1000 ImageNet-1k class names in label order (the classes of the official ARPG
//! checkpoints), from `assets/imagenet_classes.txt`, one per line.

/// The class names, index = label.
pub fn class_names() -> Vec<&'static str> {
    include_str!("../../assets/imagenet_classes.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The label of a class name (exact, then case-insensitive), if it is one.
pub fn class_of(name: &str) -> Option<usize> {
    let names = class_names();
    names
        .iter()
        .position(|n| *n == name)
        .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_distinct_names_in_label_order() {
        let names = class_names();
        assert_eq!(names.len(), 1000);
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(class_of("golden retriever"), Some(207));
        assert_eq!(class_of("Tiger"), Some(292));
        assert_eq!(names[999], "toilet tissue");
    }
}
