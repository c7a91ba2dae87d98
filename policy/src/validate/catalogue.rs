//! The endpoint catalogue: hosts, categories and pricing.

use serde_json::Value;

use super::collect::{join, type_name, Walker};
use super::raw::RawEndpoint;
use crate::matching::EndpointPattern;
use crate::pricing::{EndpointPricing, TokenPricing};
use crate::settle::ModelPrice;

// === impl Walker ===

impl Walker {
    pub(super) fn endpoint(&mut self, path: &str, v: &Value) -> Option<RawEndpoint> {
        let m = self.object(
            path,
            v,
            &["host", "category", "pricing", "costHeader", "learn"],
        )?;
        let host = self.string(m, path, "host", true);
        let pattern = host.and_then(|h| match EndpointPattern::parse(h) {
            Ok(p) if p.has_path() => {
                self.err(
                    join(path, "host"),
                    format!("{h:?}: a catalogue entry is a host without a path"),
                );
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                self.err(join(path, "host"), e.to_string());
                None
            }
        });
        let category = self.string(m, path, "category", true);
        let pricing = match m.get("pricing") {
            Some(p) => self.pricing(&join(path, "pricing"), p),
            None => Some(EndpointPricing::Free),
        };
        let cost_header = self.string(m, path, "costHeader", false).and_then(|h| {
            if h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Some(h.to_ascii_lowercase())
            } else {
                self.err(
                    join(path, "costHeader"),
                    format!("{h:?} is not an HTTP header name"),
                );
                None
            }
        });
        // `learn: false` pins the catalogue's estimate (docs/estimates.md); absent = true.
        let learn = self.boolean(m, path, "learn").unwrap_or(true);
        Some(RawEndpoint {
            pattern: pattern?,
            category: category?.to_string(),
            pricing: pricing?,
            cost_header,
            learn,
        })
    }

    pub(super) fn pricing(&mut self, path: &str, v: &Value) -> Option<EndpointPricing> {
        let m = self.object(
            path,
            v,
            &["perRequest", "models", "defaultModel", "defaultMaxTokens"],
        )?;
        let per_request = self.money(m, path, "perRequest");
        let default_model = self.string(m, path, "defaultModel", false);
        let default_max_tokens = self.count(m, path, "defaultMaxTokens", true);
        let models = m
            .get("models")
            .map(|mv| self.models(&join(path, "models"), mv));
        match (m.contains_key("perRequest"), models) {
            (true, Some(_)) => {
                self.err(path, "use either perRequest or models, not both");
                None
            }
            (true, None) => {
                for key in ["defaultModel", "defaultMaxTokens"] {
                    if m.contains_key(key) {
                        self.err(join(path, key), "only applies to pricing by models");
                    }
                }
                per_request.map(EndpointPricing::PerRequest)
            }
            (false, Some(models)) => {
                let models = models?;
                if let Some(d) = default_model {
                    if !models.iter().any(|(name, _)| name == d) {
                        self.err(
                            join(path, "defaultModel"),
                            format!("{d:?} is not one of the models"),
                        );
                    }
                }
                Some(EndpointPricing::Tokens(TokenPricing::new(
                    models,
                    default_model.map(str::to_string),
                    default_max_tokens,
                )))
            }
            (false, None) => {
                self.err(
                    path,
                    "needs perRequest or models (omit pricing for a free endpoint)",
                );
                None
            }
        }
    }

    pub(super) fn models(&mut self, path: &str, v: &Value) -> Option<Vec<(String, ModelPrice)>> {
        let Some(m) = v.as_object() else {
            self.err(
                path,
                format!(
                    "expected an object of model name → prices, found {}",
                    type_name(v)
                ),
            );
            return None;
        };
        if m.is_empty() {
            self.err(path, "must name at least one model");
            return None;
        }
        let mut out = Vec::with_capacity(m.len());
        let mut ok = true;
        for (name, pv) in m {
            let p = join(path, name);
            let Some(pm) = self.object(&p, pv, &["inputPer1k", "outputPer1k"]) else {
                ok = false;
                continue;
            };
            for key in ["inputPer1k", "outputPer1k"] {
                if !pm.contains_key(key) {
                    self.err(join(&p, key), "is required");
                }
            }
            match (
                self.money(pm, &p, "inputPer1k"),
                self.money(pm, &p, "outputPer1k"),
            ) {
                (Some(i), Some(o)) => out.push((
                    name.clone(),
                    ModelPrice {
                        input_per_1k: i,
                        output_per_1k: o,
                    },
                )),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }
}
