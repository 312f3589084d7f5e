//! From the client's model name to the upstream that serves it.

use crate::openai::OpenAiCompatible;
use crate::ProviderError;
use sluice_config::{Config, UpstreamSettings, WILDCARD_MODEL};
use std::collections::HashMap;

/// An upstream server as the router hands it out: its settings and adapter.
#[derive(Debug)]
pub struct UpstreamTarget {
    /// Validated settings (address, timeouts).
    pub settings: UpstreamSettings,
    /// The wire adapter.
    pub adapter: OpenAiCompatible,
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub struct Route<'r> {
    /// The client-visible name to use in metrics: the configured name, or
    /// `"*"` for names matched by the wildcard (keeps label cardinality bounded).
    pub model_label: &'r str,
    /// Index of the upstream in [`Router::targets`].
    pub target: usize,
    /// The model name to send upstream.
    pub upstream_model: &'r str,
}

#[derive(Debug)]
struct Entry {
    name: String,
    target: usize,
    upstream_model: Option<String>,
}

/// Maps model names to upstream targets; built once per config.
#[derive(Debug)]
pub struct Router {
    targets: Vec<UpstreamTarget>,
    by_name: HashMap<String, Entry>,
    wildcard: Option<usize>,
    listed: Vec<String>,
}

impl Router {
    /// Builds the routing table from a validated config.
    pub fn new(config: &Config) -> Self {
        let targets = config
            .upstreams
            .iter()
            .map(|settings| UpstreamTarget {
                adapter: OpenAiCompatible::new(settings),
                settings: settings.clone(),
            })
            .collect();
        let mut by_name = HashMap::with_capacity(config.models.len());
        let mut wildcard = None;
        for m in &config.models {
            if m.name == WILDCARD_MODEL {
                wildcard = Some(m.upstream);
            } else {
                by_name.insert(
                    m.name.clone(),
                    Entry {
                        name: m.name.clone(),
                        target: m.upstream,
                        upstream_model: m.upstream_model.clone(),
                    },
                );
            }
        }
        Router {
            targets,
            by_name,
            wildcard,
            listed: config.listed_models().map(|m| m.name.clone()).collect(),
        }
    }

    /// Resolves a client's model name.
    pub fn resolve<'r>(&'r self, model: &'r str) -> Result<Route<'r>, ProviderError> {
        if let Some(entry) = self.by_name.get(model) {
            return Ok(Route {
                model_label: &entry.name,
                target: entry.target,
                upstream_model: entry.upstream_model.as_deref().unwrap_or(&entry.name),
            });
        }
        match self.wildcard {
            Some(target) => Ok(Route {
                model_label: WILDCARD_MODEL,
                target,
                upstream_model: model,
            }),
            None => Err(ProviderError::UnknownModel {
                model: model.to_string(),
            }),
        }
    }

    /// All upstream targets, indexed by [`Route::target`].
    pub fn targets(&self) -> &[UpstreamTarget] {
        &self.targets
    }

    /// Whether `name` is a configured (non-wildcard) model: used to bound
    /// metric label values.
    pub fn is_listed(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The configured model names, in config order, for `GET /v1/models`.
    pub fn listed_models(&self) -> &[String] {
        &self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::load_str;

    const YAML: &str = "
upstreams:
  a: {base_url: 'http://127.0.0.1:1/v1'}
  b: {base_url: 'http://127.0.0.1:2/v1'}
models:
  - {name: fast, upstream: b, upstream_model: llama}
  - {name: gpt-4o, upstream: a}
";

    #[test]
    fn resolves_names_and_rewrites() {
        let router = Router::new(&load_str(YAML, &|_| None).unwrap());
        let r = router.resolve("fast").unwrap();
        assert_eq!(router.targets()[r.target].settings.name, "b");
        assert_eq!(r.upstream_model, "llama");
        let r = router.resolve("gpt-4o").unwrap();
        assert_eq!(r.upstream_model, "gpt-4o");
        assert_eq!(router.listed_models(), ["fast", "gpt-4o"]);
        assert_eq!(
            router.resolve("nope").unwrap_err(),
            ProviderError::UnknownModel {
                model: "nope".into()
            }
        );
    }

    #[test]
    fn wildcard_forwards_unknown_names_unchanged() {
        let yaml = format!("{YAML}  - {{name: '*', upstream: a}}\n");
        let router = Router::new(&load_str(&yaml, &|_| None).unwrap());
        let r = router.resolve("o3-mini").unwrap();
        assert_eq!((r.model_label, r.upstream_model), ("*", "o3-mini"));
        assert!(!router.is_listed("o3-mini"));
    }
}
