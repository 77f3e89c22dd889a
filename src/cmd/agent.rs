//! The db agent's commands: the daemon (`ffs db-agent`) and the operator's customer
//! tools, which work on the database directly (run them on the db agent's host).
//! The logic is in `internal_db_agent::admin`; this file parses arguments and prints.

use anyhow::Context as _;
use internal_db_agent::admin::{self, NewCustomer, table};
use internal_db_agent::db::Pool;

/// Subcommands of this role.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCmd {
    /// Runs the db agent: serves the web frontend over the commlink
    /// (`[db-agent] mode = "listen"` or `"dial-out"`).
    DbAgent,
    /// Manages customers (directly on the database named in [db-agent] database).
    #[command(subcommand)]
    Customer(CustomerCmd),
    /// Grants a customer a product (replacing an existing grant of the same product).
    Entitle(EntitleArgs),
    /// Removes a customer's entitlement to a product.
    Unentitle(UnentitleArgs),
    /// Shows the download history, newest first.
    History(HistoryArgs),
}

/// `ffs customer …`
#[derive(Debug, clap::Subcommand)]
pub enum CustomerCmd {
    /// Adds a customer; the password is prompted for (twice, no echo) unless
    /// --password-stdin is given.
    Add {
        /// Login name (case-insensitive; a-z 0-9 . _ - @ +).
        login: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// E-mail address.
        #[arg(long)]
        email: String,
        /// Grant the admin role (the web admin pages).
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists customers.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows a customer and their entitlements.
    Show {
        /// Login name.
        login: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disables a customer (no login, no downloads).
    Disable {
        /// Login name.
        login: String,
    },
    /// Enables a customer again (and lifts a lockout).
    Enable {
        /// Login name.
        login: String,
    },
    /// Sets a new password (and lifts a lockout).
    Passwd {
        /// Login name.
        login: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lifts a failed-login lockout.
    Unlock {
        /// Login name.
        login: String,
    },
}

/// `ffs entitle LOGIN PRODUCT`
#[derive(Debug, clap::Args)]
pub struct EntitleArgs {
    /// Login name.
    pub login: String,
    /// Product name as in the catalog.
    pub product: String,
    /// Version constraint: ">=2.0, <3", "^2", "2.1" (prefix), "=2.1.3" or "*".
    #[arg(long, default_value = "*")]
    pub versions: String,
    /// Last day it holds (YYYY-MM-DD, UTC) or an RFC 3339 instant; default: no end.
    #[arg(long)]
    pub until: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ffs unentitle LOGIN PRODUCT`
#[derive(Debug, clap::Args)]
pub struct UnentitleArgs {
    /// Login name.
    pub login: String,
    /// Product name.
    pub product: String,
    /// Also take away the customer's staged download areas of this product (FTP and
    /// HTTPS stop serving them within seconds); without it they live until they expire.
    #[arg(long)]
    pub revoke: bool,
}

/// `ffs history [LOGIN]`
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this customer's downloads.
    pub login: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn open(cfg: &crate::config::FfsConfig) -> anyhow::Result<Pool> {
    Ok(Pool::open(&cfg.agent.database, 1)?)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

impl AgentCmd {
    /// Runs the subcommand.
    pub async fn run(self, cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        match self {
            AgentCmd::DbAgent => {
                let link = cfg.link_config()?;
                internal_db_agent::run(cfg.agent.clone(), link, super::shutdown_signal())
                    .await
                    .context("db agent")?;
                Ok(())
            }
            AgentCmd::Customer(c) => c.run(cfg),
            AgentCmd::Entitle(a) => {
                let pool = open(cfg)?;
                let e = admin::with(&pool, |c| {
                    admin::entitle(c, &a.login, &a.product, &a.versions, a.until.as_deref())
                })?;
                if a.json {
                    print_json(&e)
                } else {
                    print!("{}", table::entitlements(std::slice::from_ref(&e)));
                    Ok(())
                }
            }
            AgentCmd::Unentitle(a) => {
                let pool = open(cfg)?;
                let n = admin::with(&pool, |c| {
                    admin::unentitle(c, &a.login, &a.product, a.revoke)
                })?;
                if n == 0 && !a.revoke {
                    anyhow::bail!("{} had no entitlement to {}", a.login, a.product);
                }
                if n > 0 {
                    println!("removed {}'s entitlement to {}", a.login, a.product);
                }
                if a.revoke {
                    println!(
                        "{}'s staged areas of {} are revoked once the web frontend next polls (seconds)",
                        a.login, a.product
                    );
                }
                Ok(())
            }
            AgentCmd::History(a) => {
                let pool = open(cfg)?;
                let rows = admin::with(&pool, |c| admin::history(c, a.login.as_deref(), a.limit))?;
                if a.json {
                    print_json(&rows)
                } else {
                    print!("{}", table::history(&rows));
                    Ok(())
                }
            }
        }
    }
}

impl CustomerCmd {
    fn run(self, cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        let pool = open(cfg)?;
        match self {
            CustomerCmd::Add {
                login,
                name,
                email,
                admin: is_admin,
                password_stdin,
                json,
            } => {
                let hasher = cfg.agent.hasher()?;
                let password = internal_db_agent::prompt::new_password(&login, password_stdin)?;
                let cu = admin::with(&pool, |c| {
                    admin::add_customer(
                        c,
                        &hasher,
                        &NewCustomer {
                            login: &login,
                            name: &name,
                            email: &email,
                            password: &password,
                            admin: is_admin,
                        },
                    )
                })?;
                if json {
                    print_json(&cu)
                } else {
                    print!("{}", table::customers(std::slice::from_ref(&cu)));
                    Ok(())
                }
            }
            CustomerCmd::List { json } => {
                let list = admin::with(&pool, admin::list_customers)?;
                if json {
                    print_json(&list)
                } else {
                    print!("{}", table::customers(&list));
                    Ok(())
                }
            }
            CustomerCmd::Show { login, json } => {
                let (cu, ents) = admin::with(&pool, |c| admin::show_customer(c, &login))?;
                if json {
                    print_json(&serde_json::json!({ "customer": cu, "entitlements": ents }))
                } else {
                    print!("{}", table::customer(&cu, &ents));
                    Ok(())
                }
            }
            CustomerCmd::Disable { login } => {
                let cu = admin::with(&pool, |c| admin::set_disabled(c, &login, true))?;
                println!(
                    "disabled {}: sessions end and staged areas are revoked once the web frontend next polls (seconds)",
                    cu.login
                );
                Ok(())
            }
            CustomerCmd::Enable { login } => {
                let cu = admin::with(&pool, |c| admin::set_disabled(c, &login, false))?;
                println!("enabled {}", cu.login);
                Ok(())
            }
            CustomerCmd::Passwd {
                login,
                password_stdin,
            } => {
                let hasher = cfg.agent.hasher()?;
                let password = internal_db_agent::prompt::new_password(&login, password_stdin)?;
                let cu = admin::with(&pool, |c| {
                    admin::set_password(c, &hasher, &login, &password)
                })?;
                println!("password changed for {}", cu.login);
                Ok(())
            }
            CustomerCmd::Unlock { login } => {
                admin::with(&pool, |c| admin::unlock(c, &login))?;
                println!("unlocked {login}");
                Ok(())
            }
        }
    }
}
