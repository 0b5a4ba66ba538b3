//! The Prometheus text format read back from /metrics: samples with their
//! labels, sums over label subsets and histogram quantiles.

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for l in text.lines() {
            if l.starts_with('#') || l.trim().is_empty() {
                continue;
            }
            let (head, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {l:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad metric value in {l:?}")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), Vec::new()),
                Some((n, rest)) => {
                    let rest = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {l:?}"));
                    let mut labels = Vec::new();
                    let mut s = rest;
                    while !s.is_empty() {
                        let (k, r) = s
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad labels in {l:?}"));
                        let mut end = 0;
                        let rb = r.as_bytes();
                        while end < rb.len()
                            && !(rb[end] == b'"' && (end == 0 || rb[end - 1] != b'\\'))
                        {
                            end += 1;
                        }
                        labels.push((k.trim_start_matches(',').to_string(), r[..end].to_string()));
                        s = r.get(end + 1..).unwrap_or("").trim_start_matches(',');
                    }
                    (n.to_string(), labels)
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Sum over samples of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.find(name, want).iter().map(|s| s.value).sum()
    }

    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.name == name || s.name.starts_with(&format!("{name}_")))
    }

    /// Quantile from a Prometheus histogram (linear within the bucket).
    pub fn histogram_quantile(&self, name: &str, want: &[(&str, &str)], q: f64) -> Option<f64> {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in self.find(&format!("{name}_bucket"), want) {
            let le = s.label("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some(b) => b.1 += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let total = buckets.last()?.1;
        if total == 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut prev_le, mut prev_c) = (0.0, 0.0);
        for (le, c) in buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(prev_le);
                }
                return Some(
                    prev_le
                        + (le - prev_le)
                            * if c > prev_c {
                                (rank - prev_c) / (c - prev_c)
                            } else {
                                0.0
                            },
                );
            }
            prev_le = le;
            prev_c = c;
        }
        None
    }
}
