//! Flow runs an earlier process left undelivered to a Prefect server: the
//! next process that reports there delivers them.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::crashed::process_alive;
use super::rows::{Delivery, delivery_at};
use super::{Store, StoreError, hostname};

impl Store {
    /// The flow runs the server at `api_url` does not have whole, noted by
    /// processes that are gone (a live process is still delivering its own),
    /// oldest first.
    ///
    /// ```
    /// use prefecto::store::Store;
    ///
    /// let home = std::env::temp_dir().join(format!("prefecto-doc-left-{}", std::process::id()));
    /// let store = Store::open(home.join("prefecto.db")).unwrap();
    /// assert!(store.left_undelivered("http://127.0.0.1:4200/api").unwrap().is_empty());
    /// # drop(store); let _ = std::fs::remove_dir_all(&home);
    /// ```
    pub fn left_undelivered(&self, api_url: &str) -> Result<Vec<Delivery>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT d.flow_run_id, d.api_url, d.server_flow_run_id, d.parameters, d.delivered,
                        d.reason, f.host, f.pid
                 FROM prefect_delivery d JOIN flow_runs f ON f.id = d.flow_run_id
                 WHERE d.delivered = 0 AND d.api_url = ?1
                 ORDER BY f.created",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![api_url], |row| {
                let delivery = delivery_at(row)?;
                let host: String = row.get(6)?;
                let pid: u32 = row.get(7)?;
                Ok((delivery, host, pid))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        let here = hostname();
        Ok(rows
            .into_iter()
            .filter(|(_, host, pid)| !(host == here && process_alive(*pid)))
            .map(|(delivery, _, _)| delivery)
            .collect())
    }

    /// Claims the delivery of `flow_run` for this process: false if a live
    /// process (other than this one) has claimed it already.
    ///
    /// ```
    /// use prefecto::store::Store;
    ///
    /// let home = std::env::temp_dir().join(format!("prefecto-doc-claim-{}", std::process::id()));
    /// let store = Store::open(home.join("prefecto.db")).unwrap();
    /// // No such delivery: nothing to claim.
    /// assert!(!store.claim_delivery(uuid::Uuid::nil()).unwrap());
    /// # drop(store); let _ = std::fs::remove_dir_all(&home);
    /// ```
    pub fn claim_delivery(&self, flow_run: Uuid) -> Result<bool, StoreError> {
        let me = format!("{}:{}", hostname(), std::process::id());
        let id = flow_run.to_string();
        let claimed: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT claimed_by FROM prefect_delivery WHERE flow_run_id = ?1 AND delivered = 0",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        let Some(claimed) = claimed else {
            return Ok(false);
        };
        if let Some(owner) = &claimed {
            let live = owner.rsplit_once(':').is_some_and(|(host, pid)| {
                host == hostname() && pid.parse().is_ok_and(process_alive)
            });
            if live && *owner != me {
                return Ok(false);
            }
        }
        // Only if no one claimed it meanwhile.
        let changed = self
            .conn
            .execute(
                "UPDATE prefect_delivery SET claimed_by = ?2
                 WHERE flow_run_id = ?1 AND claimed_by IS ?3",
                params![id, me, claimed],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(changed == 1)
    }
}
