//! `upstream` and the `[aws_pca]` table: where the intermediate comes from.

use std::num::NonZeroU32;
use std::path::PathBuf;

use halyard_proto::Ttl;
use serde::Deserialize;

use super::ConfigError;
use crate::upstream::{AwsPcaConfig, CaArn, SigningAlgorithm, UpstreamError};

/// The shortest `aws_pca.intermediate_ttl`: PCA is asked for at least a minute of validity, and
/// rotation prepares the next intermediate at half of this.
const MIN_INTERMEDIATE_TTL_SECS: u64 = 90;

/// Where the CA's intermediate comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Upstream {
    /// `upstream = "offline"` (the default): the operator imports intermediates signed by an
    /// offline root (`intermediate import`, `authority prepare --cert`); with `--dev`, the
    /// development root in the data directory signs them.
    #[default]
    Offline,
    /// `upstream = "aws-pca"`: AWS Private CA issues the intermediate and every next one
    /// (prepared at ½ of the active one's life, activated at ⅚).
    AwsPca(AwsPcaConfig),
}

/// The `[aws_pca]` table as written: every key optional, so that flags can fill it in or
/// override it; [`AwsPcaConfig`] is what it resolves to.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AwsPcaFile {
    /// The CA that signs the intermediate (required).
    pub ca_arn: Option<CaArn>,
    /// The AWS region; default: the CA ARN's.
    pub region: Option<String>,
    /// The signing algorithm; default: the one that fits the CA's key.
    pub signing_algorithm: Option<SigningAlgorithm>,
    /// The certificate template; default `SubordinateCACertificate_PathLen0/V1`.
    pub template_arn: Option<String>,
    /// Another endpoint than the region's (a VPC endpoint; an emulator in tests).
    pub endpoint_url: Option<String>,
    /// How long each intermediate is valid; default 7 days.
    pub intermediate_ttl: Option<String>,
    /// The most API calls a second to PCA; default 5.
    pub max_issue_rate: Option<NonZeroU32>,
    /// PEM files of further roots to trust besides the CA's own.
    pub extra_roots: Option<Vec<PathBuf>>,
}

impl AwsPcaFile {
    /// Whether no key is set (flags that name none).
    pub fn is_empty(&self) -> bool {
        *self == AwsPcaFile::default()
    }

    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn overlay(self, over: AwsPcaFile) -> AwsPcaFile {
        macro_rules! pick {
            ($($field:ident),*) => { AwsPcaFile { $($field: over.$field.or(self.$field)),* } };
        }
        pick!(
            ca_arn,
            region,
            signing_algorithm,
            template_arn,
            endpoint_url,
            intermediate_ttl,
            max_issue_rate,
            extra_roots
        )
    }
}

/// Resolves `upstream` and the `[aws_pca]` table; `invalid` names the source of a bad value.
pub(super) fn resolve(
    upstream: Option<&str>,
    table: Option<AwsPcaFile>,
    dev: bool,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<Upstream, ConfigError> {
    match upstream {
        None | Some("offline") => match table {
            Some(_) => Err(invalid(
                "aws_pca",
                "is set, but upstream is not \"aws-pca\": add upstream = \"aws-pca\", or remove \
                 the [aws_pca] table"
                    .into(),
            )),
            None => Ok(Upstream::Offline),
        },
        Some("aws-pca") if dev => Err(invalid(
            "upstream",
            "\"aws-pca\" cannot be combined with --dev: --dev has a development root in the data \
             directory sign the intermediate, upstream = \"aws-pca\" has AWS Private CA sign it; \
             drop --dev (and give --config) or drop upstream"
                .into(),
        )),
        Some("aws-pca") => {
            resolve_aws_pca(table.unwrap_or_default(), invalid).map(Upstream::AwsPca)
        }
        Some(other) => Err(invalid(
            "upstream",
            format!("{other:?} is not an upstream: use \"offline\" (the default) or \"aws-pca\""),
        )),
    }
}

fn resolve_aws_pca(
    table: AwsPcaFile,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<AwsPcaConfig, ConfigError> {
    let Some(ca_arn) = table.ca_arn else {
        return Err(invalid(
            "aws_pca.ca_arn",
            "is required when upstream = \"aws-pca\" (the ARN of the AWS Private CA that signs \
             the intermediate)"
                .into(),
        ));
    };
    let mut config = AwsPcaConfig::new(ca_arn);
    config.region = table.region;
    config.signing_algorithm = table.signing_algorithm;
    config.endpoint_url = table.endpoint_url;
    if let Some(template_arn) = table.template_arn {
        config.template_arn = template_arn;
    }
    if let Some(ttl) = table.intermediate_ttl {
        let ttl: Ttl = ttl.parse().map_err(|e: halyard_proto::TtlError| {
            invalid("aws_pca.intermediate_ttl", e.to_string())
        })?;
        if ttl.as_duration().as_secs() < MIN_INTERMEDIATE_TTL_SECS {
            return Err(invalid(
                "aws_pca.intermediate_ttl",
                format!(
                    "{ttl} is too short: at least {MIN_INTERMEDIATE_TTL_SECS}s (PCA is asked for a \
                     minute of validity at least, and the next intermediate is prepared at half \
                     of it)"
                ),
            ));
        }
        config.intermediate_ttl = ttl;
    }
    if let Some(rate) = table.max_issue_rate {
        config.max_issue_rate = rate;
    }
    if let Some(roots) = table.extra_roots {
        config.extra_roots = roots;
    }
    config.check().map_err(|e| match e {
        UpstreamError::Config { key, message } => invalid(table_key(key), message),
        other => invalid("aws_pca", other.to_string()),
    })?;
    Ok(config)
}

/// `key` of the `[aws_pca]` table, as the configuration names it.
fn table_key(key: &str) -> &'static str {
    match key {
        "ca_arn" => "aws_pca.ca_arn",
        "region" => "aws_pca.region",
        "signing_algorithm" => "aws_pca.signing_algorithm",
        "template_arn" => "aws_pca.template_arn",
        "endpoint_url" => "aws_pca.endpoint_url",
        "intermediate_ttl" => "aws_pca.intermediate_ttl",
        "max_issue_rate" => "aws_pca.max_issue_rate",
        "extra_roots" => "aws_pca.extra_roots",
        _ => "aws_pca",
    }
}
