//! Amounts of named resources, as the filters and scores read them once per node for
//! every pod: the four every pod and node names (cpu, ephemeral-storage, memory,
//! pods) in fields of their own, so the per-node checks compare no strings, and the
//! rest (extended resources, hugepages) in a short list sorted by name.

/// The resources kept in fields of their own, in name order.
const FIXED: [&str; 4] = ["cpu", "ephemeral-storage", "memory", "pods"];
/// Index of CPU (millicores) in [`FIXED`].
pub const CPU: usize = 0;
/// Index of memory (bytes) in [`FIXED`].
pub const MEMORY: usize = 2;
/// Index of the pod count in [`FIXED`].
pub const PODS: usize = 3;

/// A resource's place in [`Quantities`], found once and used for lookups in others.
#[derive(Clone, Copy, Debug)]
pub enum Slot<'a> {
    /// One of the fixed resources.
    Fixed(usize),
    /// Any other, by name.
    Other(&'a str),
}

/// Amounts by resource name (CPU in millicores, the rest in units); a resource not
/// named counts as 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quantities {
    fixed: [i128; 4],
    /// Other resources, sorted by name, each named once.
    other: Vec<(String, i128)>,
}

impl Quantities {
    /// The amount of resource `name`.
    pub fn get(&self, name: &str) -> i128 {
        self.at(Self::slot(name))
    }

    /// The amount in `slot`.
    pub fn at(&self, slot: Slot<'_>) -> i128 {
        match slot {
            Slot::Fixed(i) => self.fixed[i],
            Slot::Other(name) => self
                .other
                .binary_search_by(|(k, _)| k.as_str().cmp(name))
                .map_or(0, |i| self.other[i].1),
        }
    }

    /// The amount of fixed resource `i` ([`CPU`], [`MEMORY`], [`PODS`]).
    pub fn fixed(&self, i: usize) -> i128 {
        self.fixed[i]
    }

    fn slot(name: &str) -> Slot<'_> {
        FIXED
            .iter()
            .position(|f| *f == name)
            .map_or(Slot::Other(name), Slot::Fixed)
    }

    /// Sets the amount of resource `name`.
    pub fn set(&mut self, name: &str, v: i128) {
        *self.entry(name) = v;
    }

    fn entry(&mut self, name: &str) -> &mut i128 {
        match Self::slot(name) {
            Slot::Fixed(i) => &mut self.fixed[i],
            Slot::Other(_) => {
                let i = match self.other.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
                    Ok(i) => i,
                    Err(i) => {
                        self.other.insert(i, (name.to_string(), 0));
                        i
                    }
                };
                &mut self.other[i].1
            }
        }
    }

    /// Adds `o`'s amounts (or, with `sign` -1, takes them away).
    pub fn add(&mut self, o: &Quantities, sign: i128) {
        for (a, b) in self.fixed.iter_mut().zip(o.fixed) {
            *a += sign * b;
        }
        for (name, v) in &o.other {
            *self.entry(name) += sign * v;
        }
    }

    /// Every resource with a non-zero amount, in name order: its name, its slot and
    /// the amount. The fixed and the other names are merged as they go (both lists
    /// are in order): this runs once per node for every pod, and allocates nothing.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Slot<'_>, i128)> {
        let mut fixed = FIXED
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, Slot::Fixed(i), self.fixed[i]))
            .peekable();
        let mut other = self
            .other
            .iter()
            .map(|(name, v)| (name.as_str(), Slot::Other(name), *v))
            .peekable();
        std::iter::from_fn(move || {
            let fixed_first = match (fixed.peek(), other.peek()) {
                (Some(f), Some(o)) => f.0 < o.0,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if fixed_first {
                fixed.next()
            } else {
                other.next()
            }
        })
        .filter(|(_, _, v)| *v != 0)
    }
}

impl FromIterator<(String, i128)> for Quantities {
    fn from_iter<T: IntoIterator<Item = (String, i128)>>(iter: T) -> Self {
        let mut q = Quantities::default();
        for (name, v) in iter {
            q.set(&name, v);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_other_resources_read_add_and_list_in_name_order() {
        let mut node: Quantities = [
            ("memory".to_string(), 1 << 30),
            ("cpu".to_string(), 4000),
            ("example.com/gpu".to_string(), 2),
            ("pods".to_string(), 110),
        ]
        .into_iter()
        .collect();
        assert_eq!(node.get("cpu"), 4000);
        assert_eq!(node.fixed(PODS), 110);
        assert_eq!(node.get("example.com/gpu"), 2);
        assert_eq!(node.get("hugepages-2Mi"), 0);
        let names: Vec<&str> = node.iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["cpu", "example.com/gpu", "memory", "pods"]);
        let pod: Quantities = [("cpu".to_string(), 500), ("example.com/gpu".to_string(), 1)]
            .into_iter()
            .collect();
        node.add(&pod, -1);
        assert_eq!(node.get("cpu"), 3500);
        assert_eq!(node.get("example.com/gpu"), 1);
        node.add(&pod, 1);
        assert_eq!(node.get("cpu"), 4000);
        for (name, slot, v) in pod.iter() {
            assert_eq!(pod.at(slot), v, "{name}");
        }
        // Other names before, between and after the fixed ones; zeros left out.
        let mixed: Quantities = [
            ("zz.example/last".to_string(), 1),
            ("hugepages-2Mi".to_string(), 2),
            ("a.example/first".to_string(), 3),
            ("memory".to_string(), 4),
            ("pods".to_string(), 5),
            ("example.com/none".to_string(), 0),
        ]
        .into_iter()
        .collect();
        let listed: Vec<(&str, i128)> = mixed.iter().map(|(n, _, v)| (n, v)).collect();
        assert_eq!(
            listed,
            [
                ("a.example/first", 3),
                ("hugepages-2Mi", 2),
                ("memory", 4),
                ("pods", 5),
                ("zz.example/last", 1)
            ]
        );
    }
}
