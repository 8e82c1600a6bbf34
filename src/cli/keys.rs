//! `ocr-server keys`: create, list and revoke API keys in the job store, and set or rotate a
//! tenant's webhook signing secret (`keys webhook-secret`).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Secret;
use crate::error::{Error, Result};
use crate::jobs::now_ms;

/// `ocr-server keys`: API keys, stored hashed in the job store that `serve` uses.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    /// The data directory of the default SQLite store (as `serve --data-dir`).
    #[arg(long, env = "OCR_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// The job store (as `serve --database-url`).
    #[arg(long, env = "OCR_DATABASE_URL", global = true)]
    pub database_url: Option<Secret>,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it once (the last line of standard output).
    Create(KeyCreateArgs),
    /// List the keys (never the keys themselves).
    List,
    /// Revoke a key: it is refused (401) on every replica within seconds.
    Revoke {
        /// The key's name.
        name: String,
    },
    /// Set or rotate a tenant's webhook signing secret and print it once; the one it replaces
    /// keeps signing beside it until the next rotation.
    WebhookSecret {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The new secret (`whsec_<base64>` or raw text); generated when absent.
        #[arg(long, env = "OCR_TENANT_WEBHOOK_SECRET")]
        secret: Option<Secret>,
    },
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A unique name: the actor in audit events.
    #[arg(long)]
    pub name: String,
    /// The tenant whose jobs the key creates and sees (default: the key's name); keys of one
    /// tenant share its jobs.
    #[arg(long)]
    pub tenant: Option<String>,
    /// What the key may do: ocr, jobs, review, admin (admin: everything, every tenant).
    #[arg(long, value_delimiter = ',', default_value = "ocr,jobs")]
    pub scopes: Vec<String>,
    /// Requests per second (token bucket refill); unlimited without it.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Requests the bucket holds (default: one second's worth).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Pages per second (OCR and job pages); unlimited without it.
    #[arg(long)]
    pub page_rate: Option<f64>,
    /// Pages the page bucket holds (default: one second's worth).
    #[arg(long)]
    pub page_burst: Option<u32>,
    /// Most queued and processing job pages of the key's tenant (429 `quota_exceeded` past it).
    #[arg(long)]
    pub max_queued_pages: Option<u64>,
    /// The tenant's webhook signing secret (`whsec_<base64>` or raw text). Without it, the
    /// tenant's first key comes with a generated one, printed once before the key.
    #[arg(long, env = "OCR_TENANT_WEBHOOK_SECRET")]
    pub webhook_secret: Option<Secret>,
    /// Days until the key stops working (401 after, on the store's clock); never without it.
    #[arg(long)]
    pub expires_in_days: Option<f64>,
}

/// Runs `ocr-server keys`.
pub fn run_keys(args: &KeysArgs) -> Result<bool> {
    let url = args.database_url.as_ref().map_or_else(
        || format!("sqlite://{}", args.data_dir.join("jobs.db").display()),
        |s| s.0.clone(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("starting the async runtime: {e}")))?;
    rt.block_on(async {
        let store = crate::jobs::store::open(&url).await?;
        let mut out = std::io::stdout().lock();
        let io = |e: std::io::Error| Error::Io {
            path: "stdout".into(),
            source: e,
        };
        match &args.action {
            KeysAction::Create(c) => {
                crate::auth::check_name("key name", &c.name)?;
                let tenant = c.tenant.clone().unwrap_or_else(|| c.name.clone());
                crate::auth::check_name("tenant", &tenant)?;
                let mut scopes = Vec::new();
                for s in &c.scopes {
                    let s = crate::auth::Scope::parse(s)?;
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                for (what, rate) in [("--rate-limit", c.rate_limit), ("--page-rate", c.page_rate)] {
                    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                        return Err(Error::InvalidOption(format!("{what} must be above 0")));
                    }
                }
                if c.expires_in_days
                    .is_some_and(|d| !(d.is_finite() && d > 0.0))
                {
                    return Err(Error::InvalidOption(
                        "--expires-in-days must be above 0".into(),
                    ));
                }
                let key = crate::auth::new_key();
                let record = crate::jobs::model::ApiKey {
                    name: c.name.clone(),
                    tenant: tenant.clone(),
                    hash: crate::auth::hash_key(&key),
                    scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
                    rate_per_s: c.rate_limit,
                    burst: c.burst,
                    pages_per_s: c.page_rate,
                    page_burst: c.page_burst,
                    max_queued_pages: c.max_queued_pages,
                    created_ms: now_ms(),
                    revoked_ms: None,
                    expires_ms: c
                        .expires_in_days
                        .map(|d| now_ms().saturating_add((d * 86_400_000.0) as i64)),
                };
                store.create_key(&record).await?;
                let secret = match &c.webhook_secret {
                    Some(s) => Some((s.0.clone(), false)),
                    None if store.tenant_webhook_secrets(&tenant).await?.is_empty() => {
                        Some((crate::jobs::webhook::new_secret(), true))
                    }
                    None => None,
                };
                if let Some((secret, generated)) = secret {
                    crate::jobs::webhook::parse_secret(&secret)?;
                    store
                        .set_tenant_webhook_secret(&tenant, &secret, now_ms())
                        .await?;
                    if generated {
                        writeln!(
                            out,
                            "webhook secret of tenant {tenant} (signs its webhooks; shown only \
                             once):\n{secret}"
                        )
                        .map_err(io)?;
                    } else {
                        writeln!(out, "webhook secret of tenant {tenant} set").map_err(io)?;
                    }
                }
                writeln!(
                    out,
                    "created key {} (tenant {tenant}, scopes {}); it is shown only once:",
                    c.name,
                    record.scopes.join(",")
                )
                .map_err(io)?;
                writeln!(out, "{key}").map_err(io)?;
            }
            KeysAction::List => {
                writeln!(
                    out,
                    "{:<24} {:<24} {:<22} {:>10} {:>10} {:>12} state",
                    "name", "tenant", "scopes", "req/s", "pages/s", "max_queued"
                )
                .map_err(io)?;
                let num = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v}"));
                for k in store.keys().await? {
                    writeln!(
                        out,
                        "{:<24} {:<24} {:<22} {:>10} {:>10} {:>12} {}",
                        k.name,
                        k.tenant,
                        k.scopes.join(","),
                        num(k.rate_per_s),
                        num(k.pages_per_s),
                        k.max_queued_pages
                            .map_or_else(|| "-".into(), |v| v.to_string()),
                        if k.revoked_ms.is_some() {
                            "revoked".to_string()
                        } else if !k.is_valid_at(now_ms()) {
                            "expired".to_string()
                        } else if let Some(e) = k.expires_ms {
                            format!(
                                "active, expires in {:.1} days",
                                (e - now_ms()) as f64 / 86_400_000.0
                            )
                        } else {
                            "active".to_string()
                        }
                    )
                    .map_err(io)?;
                }
            }
            KeysAction::WebhookSecret { tenant, secret } => {
                crate::auth::check_name("tenant", tenant)?;
                let (secret, shown) = match secret {
                    Some(s) => (s.0.clone(), false),
                    None => (crate::jobs::webhook::new_secret(), true),
                };
                crate::jobs::webhook::parse_secret(&secret)?;
                store
                    .set_tenant_webhook_secret(tenant, &secret, now_ms())
                    .await?;
                writeln!(
                    out,
                    "webhook secret of tenant {tenant} set; the previous one signs beside it \
                     until the next rotation"
                )
                .map_err(io)?;
                if shown {
                    writeln!(out, "{secret}").map_err(io)?;
                }
            }
            KeysAction::Revoke { name } => {
                if !store.revoke_key(name, now_ms()).await? {
                    return Err(Error::InvalidOption(format!(
                        "no active key named {name:?}"
                    )));
                }
                writeln!(out, "revoked key {name}").map_err(io)?;
            }
        }
        Ok(true)
    })
}
