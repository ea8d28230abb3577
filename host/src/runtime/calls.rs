//! The short guest calls made outside a job: `describe` + `max-fails` at load time,
//! `validate` on submit, `should-retry` after a failure. Each runs in a fresh
//! instance with the plugin's memory cap and the runtime's call timeout, on the
//! call slots (so a node full of running jobs still answers them); the
//! validations of one bulk request share an instance ([`Runtime::validate_many`]).

use std::path::Path;
use std::sync::Arc;

use tokio::time::Instant;
use wasmtime::Store;

use super::Runtime;
use super::bindings::{self, JobInfo};
use super::job_host::{Control, DetachedHost};
use super::plugin::Plugin;
use super::sandbox::{CallFailure, failure_of, race};
use super::state::InstanceState;
use crate::error::{CallError, PluginError};

impl Runtime {
    /// Run `f` on a fresh instance of `pre` within the call limits.
    async fn detached_call<R>(
        &self,
        pre: &bindings::PluginPre<InstanceState>,
        memory_cap: u64,
        f: impl AsyncFnOnce(&mut Store<InstanceState>, &bindings::Plugin) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        let _slot = self.call_slot().await;
        let mut store = self.new_store(Arc::new(DetachedHost), Control::new(), memory_cap, None);
        let limit = self.config().call_timeout;
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            f(&mut store, &instance).await
        };
        let raced = race(call, Instant::now() + limit, None, limit).await;
        store.data().finish_output();
        match raced {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(failure_of(&e, store.data())),
            Err(kill) => Err(CallFailure::Killed(kill)),
        }
    }

    /// Ask a freshly compiled plugin for its job info and `max-fails`.
    pub(crate) async fn describe(
        &self,
        file: &Path,
        pre: &bindings::PluginPre<InstanceState>,
    ) -> Result<(JobInfo, u32), PluginError> {
        // Before describe we do not know the plugin's own cap: use the largest one
        // a plugin may declare.
        let cap = self.config().max_memory;
        let answer = self
            .detached_call(pre, cap, async |store, instance| {
                let job = instance.wasmjobs_plugin_job();
                let info = job.call_describe(&mut *store).await?;
                let max_fails = job.call_max_fails(&mut *store).await?;
                Ok((info, max_fails))
            })
            .await;
        answer.map_err(|failure| PluginError::Describe {
            file: file.to_path_buf(),
            call: "describe",
            reason: match failure {
                CallFailure::Killed(k) => k.to_string(),
                CallFailure::Trapped(t) => t,
            },
        })
    }

    /// Run the plugin's `validate(params)`. `Ok(Err(message))` is the plugin
    /// refusing the parameters; `Err` is the plugin failing to answer.
    pub async fn validate(
        &self,
        plugin: &Plugin,
        params: &str,
    ) -> Result<Result<(), String>, CallError> {
        self.detached_call(
            &plugin.pre,
            plugin.info().memory_cap,
            async |store, instance| {
                instance
                    .wasmjobs_plugin_job()
                    .call_validate(&mut *store, params)
                    .await
            },
        )
        .await
        .map_err(|f| self.call_error(plugin, "validate", f))
    }

    /// [`Runtime::validate`] for each of `params`, in order, on one instance:
    /// the jobs of one bulk request (one client's) share it, so a batch pays
    /// for one instance, not one per job. It stops at the first job that is
    /// not valid (refused, or the plugin failed to answer): the batch is
    /// refused anyway, and a plugin that always times out costs one timeout.
    /// Each call has the whole call timeout. A trap or a memory kill on an
    /// instance that already answered is retried once on a fresh instance,
    /// so what earlier calls left behind (a bump allocator that never frees)
    /// cannot fail a valid job.
    pub async fn validate_many(
        &self,
        plugin: &Plugin,
        params: &[&str],
    ) -> Vec<Result<Result<(), String>, CallError>> {
        let _slot = self.call_slot().await;
        let mut out = Vec::with_capacity(params.len());
        let mut live = None;
        for p in params {
            let reused = live.is_some();
            let mut answer = self.validate_on(&mut live, plugin, p).await;
            if reused
                && matches!(
                    answer,
                    Err(CallFailure::Trapped(_)
                        | CallFailure::Killed(super::KillReason::MemoryLimit))
                )
            {
                answer = self.validate_on(&mut live, plugin, p).await;
            }
            let valid = matches!(answer, Ok(Ok(())));
            out.push(answer.map_err(|f| self.call_error(plugin, "validate", f)));
            if !valid {
                break;
            }
        }
        if let Some((store, _)) = &live {
            store.data().finish_output();
        }
        out
    }

    /// One `validate` call on `live` (a fresh instance when it is `None`). A
    /// failed call leaves `live` empty: its instance is not used again.
    async fn validate_on(
        &self,
        live: &mut Option<(Store<InstanceState>, bindings::Plugin)>,
        plugin: &Plugin,
        params: &str,
    ) -> Result<Result<(), String>, CallFailure> {
        let limit = self.config().call_timeout;
        if live.is_none() {
            let cap = plugin.info().memory_cap;
            let mut store = self.new_store(Arc::new(DetachedHost), Control::new(), cap, None);
            let instance = plugin.pre.instantiate_async(&mut store);
            let failure = match race(instance, Instant::now() + limit, None, limit).await {
                Ok(Ok(instance)) => {
                    *live = Some((store, instance));
                    None
                }
                Ok(Err(e)) => Some(failure_of(&e, store.data())),
                Err(kill) => Some(CallFailure::Killed(kill)),
            };
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        let Some((store, instance)) = live.as_mut() else {
            return Err(CallFailure::Trapped("no instance to call".into()));
        };
        let call = instance
            .wasmjobs_plugin_job()
            .call_validate(&mut *store, params);
        let failure = match race(call, Instant::now() + limit, None, limit).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => failure_of(&e, store.data()),
            Err(kill) => CallFailure::Killed(kill),
        };
        store.data().finish_output();
        *live = None;
        Err(failure)
    }

    /// Ask the plugin whether a job may be retried after `failure` on `attempt`.
    pub async fn should_retry(
        &self,
        plugin: &Plugin,
        failure: &str,
        attempt: u32,
    ) -> Result<bool, CallError> {
        self.detached_call(
            &plugin.pre,
            plugin.info().memory_cap,
            async |store, instance| {
                instance
                    .wasmjobs_plugin_job()
                    .call_should_retry(&mut *store, failure, attempt)
                    .await
            },
        )
        .await
        .map_err(|f| self.call_error(plugin, "should-retry", f))
    }

    fn call_error(&self, plugin: &Plugin, call: &'static str, failure: CallFailure) -> CallError {
        let plugin = plugin.name().to_string();
        match failure {
            CallFailure::Trapped(reason) => CallError::Trapped {
                plugin,
                call,
                reason,
            },
            CallFailure::Killed(super::KillReason::MemoryLimit) => {
                CallError::MemoryLimit { plugin, call }
            }
            CallFailure::Killed(_) => CallError::TimedOut {
                plugin,
                call,
                limit_ms: self
                    .config()
                    .call_timeout
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            },
        }
    }
}
