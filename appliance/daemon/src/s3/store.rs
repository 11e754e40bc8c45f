//! The S3 runpack store: each runpack is one signed `.tar.zst` bundle (the download format,
//! signature over the whole manifest) at `<prefix>/<tenant>/<namespace>/<name>/runpack.tar.zst`,
//! written with the configured encryption and Object Lock retention, read back only after
//! every check of the bundle reader passed (signature against the key ring, every hash,
//! size and ratio limits, the scope it was signed for).
//!
//! Uploads are all or nothing: a bundle up to `part_size_mib` is one PUT (the store keeps it
//! whole or not at all); a larger one is a multipart upload that is aborted on any failure,
//! and whose leftovers from an earlier interrupted attempt are aborted before a retry. A
//! retry of an export whose bundle is already stored (same sha256) stores nothing new.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockEnabled, ObjectLockLegalHoldStatus,
    ObjectLockMode, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use aws_smithy_types::DateTime;
use dg_crypto::Sha256;
use dg_storage::bundle::{build_bundle, read_bundle, BundleLimits, VerifiedBundle};
use dg_storage::runpack_backend::{RunpackBackend, StoredRunpack, MANIFEST};
use dg_storage::runpack_store::RunpackStoreError;
use dg_storage::signing::KeyStore;
use dg_storage::Scope;

use super::client::{self, CustomerKey};
use super::keys::bundle_key;
use super::settings::{EncryptionMode, LockMode, ObjectLock, S3Settings};
use super::S3Error;

/// User metadata carrying the bundle's sha256 (what makes a retried export idempotent).
const SHA256_METADATA: &str = "dg-bundle-sha256";

/// The S3 runpack store.
pub struct S3RunpackStore {
    settings: S3Settings,
    client: Client,
    /// The store's own runtime: requests run here whatever thread asks (the request path
    /// runs on blocking threads), and each wait is bounded.
    runtime: Option<tokio::runtime::Runtime>,
    keys: Arc<KeyStore>,
    customer_key: Option<CustomerKey>,
    /// Bound on one whole store operation.
    timeout: Duration,
}

impl std::fmt::Debug for S3RunpackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3RunpackStore").field("bucket", &self.settings.bucket).finish_non_exhaustive()
    }
}

impl Drop for S3RunpackStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio refuses inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What one object in the store is: its version and retention (for the audit entry).
#[derive(Debug, Default)]
struct ObjectFacts {
    version_id: Option<String>,
    lock_mode: Option<String>,
    retain_until: Option<String>,
    legal_hold: bool,
    encryption: Option<String>,
}

impl ObjectFacts {
    fn detail(&self, bucket: &str, key: &str, sha256: &str) -> String {
        format!(
            "s3 bucket={bucket} key={key} version_id={} retention={} retain_until={} legal_hold={} encryption={} sha256={sha256}",
            self.version_id.as_deref().unwrap_or("none"),
            self.lock_mode.as_deref().unwrap_or("none"),
            self.retain_until.as_deref().unwrap_or("none"),
            if self.legal_hold { "on" } else { "off" },
            self.encryption.as_deref().unwrap_or("none"),
        )
    }
}

/// How an SDK failure reads to callers: away or slow is retryable, a refusal is not.
fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(what: &str, err: &SdkError<E>) -> RunpackStoreError {
    match err {
        SdkError::TimeoutError(_) => RunpackStoreError::Unavailable(format!("{what}: timed out")),
        SdkError::DispatchFailure(failure) => {
            RunpackStoreError::Unavailable(format!("{what}: cannot reach the object store ({failure:?})"))
        }
        SdkError::ResponseError(_) => {
            RunpackStoreError::Unavailable(format!("{what}: the object store's answer was cut off or unreadable"))
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("");
            let text = format!("{what}: HTTP {status} {code} {message}").trim_end().to_string();
            if status == 404 || matches!(code, "NoSuchKey" | "NotFound") {
                RunpackStoreError::NotFound(text)
            } else if status >= 500 || status == 429 || matches!(code, "SlowDown" | "RequestTimeout") {
                RunpackStoreError::Unavailable(text)
            } else {
                RunpackStoreError::Refused(text)
            }
        }
        other => RunpackStoreError::Refused(format!("{what}: {other:?}")),
    }
}

fn iso8601(time: &DateTime) -> String {
    time.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_else(|_| time.secs().to_string())
}

impl S3RunpackStore {
    /// Connects and checks the bucket: reachable, Object Lock enabled when retention is
    /// configured, and encryption guaranteed when `require_encryption` is set.
    ///
    /// # Errors
    /// A message for the operator; the appliance does not start.
    pub fn open(settings: &S3Settings, keys: Arc<KeyStore>) -> Result<Self, S3Error> {
        let client = client::build(settings)?;
        let customer_key = match (&settings.encryption.mode, &settings.encryption.customer_key_file) {
            (EncryptionMode::SseC, Some(path)) => Some(client::customer_key(path)?),
            _ => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dg-s3")
            .enable_all()
            .build()
            .map_err(|err| S3Error::Config(format!("cannot start the object store's runtime: {err}")))?;
        let store = Self {
            settings: settings.clone(),
            client,
            runtime: Some(runtime),
            keys,
            customer_key,
            timeout: Duration::from_secs(settings.timeout_s),
        };
        store.check_bucket()?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it at most the operation timeout
    /// (plus a second for the SDK's own timeout to answer first).
    fn run<T: Send + 'static>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, RunpackStoreError>> + Send + 'static,
    ) -> Result<T, RunpackStoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(RunpackStoreError::Unavailable(format!("{what}: the object store is shut down")));
        };
        let (send, receive) = mpsc::sync_channel(1);
        let task = runtime.spawn(async move {
            let _ = send.send(work.await);
        });
        match receive.recv_timeout(self.timeout + Duration::from_secs(1)) {
            Ok(result) => result,
            Err(_) => {
                task.abort();
                Err(RunpackStoreError::Unavailable(format!("{what}: no answer within {} s", self.timeout.as_secs())))
            }
        }
    }

    fn check_bucket(&self) -> Result<(), S3Error> {
        let settings = &self.settings;
        let (client, bucket) = (self.client.clone(), settings.bucket.clone());
        self.run("checking the bucket", async move {
            client.head_bucket().bucket(&bucket).send().await.map_err(|err| match classify("HeadBucket", &err) {
                RunpackStoreError::NotFound(_) => RunpackStoreError::Refused("no such bucket (HTTP 404)".into()),
                other => other,
            })?;
            Ok(())
        })
        .map_err(|err| S3Error::Bucket(format!("bucket {}: {err}", settings.bucket)))?;
        if settings.uses_object_lock() {
            let (client, bucket) = (self.client.clone(), settings.bucket.clone());
            let enabled = self.run("checking Object Lock", async move {
                match client.get_object_lock_configuration().bucket(&bucket).send().await {
                    Ok(answer) => Ok(answer
                        .object_lock_configuration
                        .and_then(|config| config.object_lock_enabled)
                        .is_some_and(|enabled| enabled == ObjectLockEnabled::Enabled)),
                    Err(err)
                        if err.as_service_error().and_then(ProvideErrorMetadata::code)
                            == Some("ObjectLockConfigurationNotFoundError") =>
                    {
                        Ok(false)
                    }
                    Err(err) => Err(classify("GetObjectLockConfiguration", &err)),
                }
            });
            match enabled {
                Ok(true) => {}
                Ok(false) => {
                    return Err(S3Error::Bucket(format!(
                        "bucket {} does not have Object Lock enabled, but [runpacks.s3] configures retention or \
                         legal hold: create the bucket with Object Lock (it cannot be turned on later on most \
                         stores) or remove the object_lock settings",
                        settings.bucket
                    )))
                }
                Err(err) => return Err(S3Error::Bucket(format!("bucket {}: {err}", settings.bucket))),
            }
        }
        if settings.require_encryption && settings.encryption.mode == EncryptionMode::None {
            let (client, bucket) = (self.client.clone(), settings.bucket.clone());
            let default_rule = self.run("checking default encryption", async move {
                match client.get_bucket_encryption().bucket(&bucket).send().await {
                    Ok(answer) => Ok(answer.server_side_encryption_configuration.is_some_and(|c| !c.rules.is_empty())),
                    Err(err)
                        if err.as_service_error().and_then(ProvideErrorMetadata::code)
                            == Some("ServerSideEncryptionConfigurationNotFoundError") =>
                    {
                        Ok(false)
                    }
                    Err(err) => Err(classify("GetBucketEncryption", &err)),
                }
            });
            match default_rule {
                Ok(true) => {}
                Ok(false) => {
                    return Err(S3Error::Bucket(format!(
                        "require_encryption is set, but neither [runpacks.s3.encryption] mode nor bucket {}'s \
                         default encryption would encrypt runpacks: set mode = \"sse-s3\", \"sse-kms\" or \"sse-c\"",
                        settings.bucket
                    )))
                }
                Err(err) => return Err(S3Error::Bucket(format!("bucket {}: {err}", settings.bucket))),
            }
        }
        Ok(())
    }

    fn limits(&self) -> BundleLimits {
        BundleLimits::default()
    }

    fn max_bundle_bytes(&self) -> u64 {
        self.settings.max_bundle_mib * 1024 * 1024
    }

    /// The retention for `tenant`'s upload, as S3 values.
    fn retention(&self, tenant: u64) -> (Option<(ObjectLockMode, DateTime)>, bool) {
        let Some(lock) = self.settings.object_lock_for(tenant) else { return (None, false) };
        (retention_of(lock), lock.legal_hold)
    }

    /// Reads the stored bundle of `key` and verifies it for `scope`.
    fn fetch(&self, scope: Scope, key: String) -> Result<(Vec<u8>, VerifiedBundle), RunpackStoreError> {
        let (client, bucket, customer_key) =
            (self.client.clone(), self.settings.bucket.clone(), self.customer_key.clone());
        let max = self.max_bundle_bytes();
        let what = format!("reading {key}");
        let bytes =
            self.run(&what.clone(), async move {
                let mut request = client.get_object().bucket(&bucket).key(&key);
                if let Some(customer) = &customer_key {
                    request = request
                        .sse_customer_algorithm("AES256")
                        .sse_customer_key(&customer.key)
                        .sse_customer_key_md5(&customer.md5);
                }
                let answer = request.send().await.map_err(|err| classify(&what, &err))?;
                let length = answer.content_length.unwrap_or(0);
                if u64::try_from(length).unwrap_or(u64::MAX) > max {
                    return Err(RunpackStoreError::TooLarge {
                        what: format!("bundle {key}"),
                        actual: length as u64,
                        limit: max,
                    });
                }
                let mut body = answer.body;
                let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
                while let Some(chunk) = body.try_next().await.map_err(|err| {
                    RunpackStoreError::Unavailable(format!("{what}: the download was cut off ({err})"))
                })? {
                    if (bytes.len() + chunk.len()) as u64 > max {
                        return Err(RunpackStoreError::TooLarge {
                            what: format!("bundle {key}"),
                            actual: max + 1,
                            limit: max,
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            })?;
        let ring = self.keys.ring().map_err(|err| RunpackStoreError::Integrity(format!("key ring: {err}")))?;
        let verified = read_bundle(bytes.as_slice(), &ring, self.limits())?;
        let descriptor = &verified.signed.descriptor;
        if (descriptor.tenant_id, descriptor.namespace_id) != (scope.tenant_id, scope.namespace_id) {
            return Err(RunpackStoreError::Integrity(format!(
                "the bundle is signed for tenant {} namespace {}, but is stored under tenant {} namespace {}",
                descriptor.tenant_id, descriptor.namespace_id, scope.tenant_id, scope.namespace_id
            )));
        }
        Ok((bytes, verified))
    }

    /// What the store says about `key` (its version, retention, encryption and the
    /// bundle's sha256), or `None` when there is no such object.
    async fn head(
        client: &Client,
        bucket: &str,
        key: &str,
        customer_key: Option<&CustomerKey>,
    ) -> Result<Option<(ObjectFacts, Option<String>)>, RunpackStoreError> {
        let mut request = client.head_object().bucket(bucket).key(key);
        if let Some(customer) = customer_key {
            request = request
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&customer.key)
                .sse_customer_key_md5(&customer.md5);
        }
        match request.send().await {
            Ok(head) => {
                let facts = ObjectFacts {
                    version_id: head.version_id.clone(),
                    lock_mode: head.object_lock_mode.as_ref().map(|mode| mode.as_str().to_string()),
                    retain_until: head.object_lock_retain_until_date.as_ref().map(iso8601),
                    legal_hold: head.object_lock_legal_hold_status == Some(ObjectLockLegalHoldStatus::On),
                    encryption: encryption_of(
                        head.server_side_encryption.as_ref(),
                        head.sse_customer_algorithm.as_deref(),
                    ),
                };
                let sha = head.metadata.and_then(|mut metadata| metadata.remove(SHA256_METADATA));
                Ok(Some((facts, sha)))
            }
            Err(err) => match classify("HeadObject", &err) {
                RunpackStoreError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// The configured retention as S3 values (`retain_until`, or now plus `retention_days`).
fn retention_of(lock: &ObjectLock) -> Option<(ObjectLockMode, DateTime)> {
    let mode = match lock.mode? {
        LockMode::Governance => ObjectLockMode::Governance,
        LockMode::Compliance => ObjectLockMode::Compliance,
    };
    let until = match (&lock.retain_until, lock.retention_days) {
        (Some(until), _) => super::settings::parse_rfc3339(until)?,
        (None, Some(days)) => dg_storage::now_ms() / 1000 + i64::from(days) * 86_400,
        (None, None) => return None,
    };
    Some((mode, DateTime::from_secs(until)))
}

fn encryption_of(sse: Option<&ServerSideEncryption>, customer: Option<&str>) -> Option<String> {
    match (sse, customer) {
        (_, Some(algorithm)) => Some(format!("sse-c:{algorithm}")),
        (Some(sse), None) => Some(sse.as_str().to_string()),
        (None, None) => None,
    }
}

/// One upload's request settings, shared by the single PUT and the multipart path.
#[derive(Clone)]
struct Upload {
    client: Client,
    bucket: String,
    key: String,
    sha256: String,
    retention: Option<(ObjectLockMode, DateTime)>,
    legal_hold: bool,
    encryption: EncryptionMode,
    kms_key_id: Option<String>,
    customer_key: Option<CustomerKey>,
    part_size: usize,
    require_encryption: bool,
}

/// Applies the same headers to a PutObject or CreateMultipartUpload builder.
macro_rules! object_settings {
    ($request:expr, $upload:expr) => {{
        let upload = $upload;
        let mut request = $request.metadata(SHA256_METADATA, &upload.sha256).content_type("application/zstd");
        if let Some((mode, until)) = &upload.retention {
            request = request.object_lock_mode(mode.clone()).object_lock_retain_until_date(*until);
        }
        if upload.legal_hold {
            request = request.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
        }
        match upload.encryption {
            EncryptionMode::None => {}
            EncryptionMode::SseS3 => request = request.server_side_encryption(ServerSideEncryption::Aes256),
            EncryptionMode::SseKms => {
                request = request
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(upload.kms_key_id.clone())
            }
            EncryptionMode::SseC => {
                if let Some(customer) = &upload.customer_key {
                    request = request
                        .sse_customer_algorithm("AES256")
                        .sse_customer_key(&customer.key)
                        .sse_customer_key_md5(&customer.md5);
                }
            }
        }
        request
    }};
}

impl Upload {
    async fn single(&self, bytes: Vec<u8>) -> Result<ObjectFacts, RunpackStoreError> {
        let request = self.client.put_object().bucket(&self.bucket).key(&self.key);
        // The digest already computed for the metadata is the upload's checksum: the store
        // checks the bytes it received against it, and nothing hashes them twice.
        let checksum = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            hex::decode(&self.sha256).unwrap_or_default(),
        );
        let answer = object_settings!(request, self)
            .checksum_sha256(checksum)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|err| classify(&format!("uploading {}", self.key), &err))?;
        Ok(ObjectFacts {
            version_id: answer.version_id,
            encryption: encryption_of(answer.server_side_encryption.as_ref(), answer.sse_customer_algorithm.as_deref()),
            ..ObjectFacts::default()
        })
    }

    /// Aborts every unfinished multipart upload of this key (an earlier attempt's).
    async fn abort_leftovers(&self) -> Result<(), RunpackStoreError> {
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.key)
            .send()
            .await
            .map_err(|err| classify("listing unfinished uploads", &err))?;
        for upload in listed.uploads() {
            if upload.key() != Some(self.key.as_str()) {
                continue;
            }
            if let Some(id) = upload.upload_id() {
                self.abort(id).await?;
            }
        }
        Ok(())
    }

    async fn abort(&self, upload_id: &str) -> Result<(), RunpackStoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|err| classify("aborting an unfinished upload", &err))?;
        Ok(())
    }

    async fn multipart(&self, bytes: Vec<u8>) -> Result<ObjectFacts, RunpackStoreError> {
        self.abort_leftovers().await?;
        let request = self.client.create_multipart_upload().bucket(&self.bucket).key(&self.key);
        let created = object_settings!(request, self)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|err| classify(&format!("starting the upload of {}", self.key), &err))?;
        let upload_id = created
            .upload_id
            .ok_or_else(|| RunpackStoreError::Refused("the store started an upload without an id".into()))?;
        match self.parts(&upload_id, bytes).await {
            Ok(facts) => Ok(facts),
            Err(err) => {
                // Best effort: when the store is away this fails too, and the next attempt
                // at this export aborts the leftover before it starts (abort_leftovers).
                if let Err(abort) = self.abort(&upload_id).await {
                    tracing::warn!(key = %self.key, error = %abort, "could not abort the unfinished upload; the next export of this runpack will");
                }
                Err(err)
            }
        }
    }

    async fn parts(&self, upload_id: &str, bytes: Vec<u8>) -> Result<ObjectFacts, RunpackStoreError> {
        let mut completed = Vec::new();
        for (index, chunk) in bytes.chunks(self.part_size).enumerate() {
            let number = i32::try_from(index + 1).map_err(|_| RunpackStoreError::Refused("too many parts".into()))?;
            let mut request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .body(ByteStream::from(chunk.to_vec()));
            if let Some(customer) = &self.customer_key {
                request = request
                    .sse_customer_algorithm("AES256")
                    .sse_customer_key(&customer.key)
                    .sse_customer_key_md5(&customer.md5);
            }
            let part = request
                .send()
                .await
                .map_err(|err| classify(&format!("uploading part {number} of {}", self.key), &err))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag)
                    .set_checksum_sha256(part.checksum_sha256)
                    .build(),
            );
        }
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(|err| classify(&format!("completing the upload of {}", self.key), &err))?;
        Ok(ObjectFacts {
            version_id: done.version_id,
            encryption: encryption_of(done.server_side_encryption.as_ref(), None)
                .or_else(|| self.customer_key.as_ref().map(|_| "sse-c:AES256".to_string())),
            ..ObjectFacts::default()
        })
    }

    async fn store(self, bytes: Vec<u8>) -> Result<ObjectFacts, RunpackStoreError> {
        let head = S3RunpackStore::head(&self.client, &self.bucket, &self.key, self.customer_key.as_ref()).await?;
        if let Some((facts, Some(sha))) = head {
            if sha == self.sha256 {
                // Already stored (a retried export): nothing new is written.
                return Ok(facts);
            }
        }
        let mut facts =
            if bytes.len() <= self.part_size { self.single(bytes).await? } else { self.multipart(bytes).await? };
        if self.require_encryption && facts.encryption.is_none() && self.encryption == EncryptionMode::None {
            return Err(RunpackStoreError::Refused(format!(
                "{} was stored, but the store did not confirm it is encrypted (require_encryption)",
                self.key
            )));
        }
        if let Some((mode, until)) = &self.retention {
            facts.lock_mode = Some(mode.as_str().to_string());
            facts.retain_until = Some(iso8601(until));
        }
        facts.legal_hold = self.legal_hold;
        Ok(facts)
    }
}

impl RunpackBackend for S3RunpackStore {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn put(
        &self,
        scope: Scope,
        name: &str,
        manifest_name: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<StoredRunpack, RunpackStoreError> {
        // The name is checked before anything is built or sent.
        let key = bundle_key(&self.settings.prefix, scope, name)?;
        let manifest = files
            .iter()
            .find(|(path, _)| path == manifest_name)
            .map(|(_, bytes)| bytes.as_slice())
            .ok_or_else(|| RunpackStoreError::Bundle(format!("no {manifest_name} among the files")))?;
        let others: Vec<(String, Vec<u8>)> = files.iter().filter(|(path, _)| path != manifest_name).cloned().collect();
        let signer = self.keys.active().map_err(|err| RunpackStoreError::Bundle(err.to_string()))?;
        let bytes = build_bundle(manifest_name, manifest, &others, &signer)?;
        if bytes.len() as u64 > self.max_bundle_bytes() {
            return Err(RunpackStoreError::TooLarge {
                what: format!("bundle of {name}"),
                actual: bytes.len() as u64,
                limit: self.max_bundle_bytes(),
            });
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (retention, legal_hold) = self.retention(scope.tenant_id);
        let upload = Upload {
            client: self.client.clone(),
            bucket: self.settings.bucket.clone(),
            key: key.clone(),
            sha256: sha256.clone(),
            retention,
            legal_hold,
            encryption: self.settings.encryption.mode,
            kms_key_id: self.settings.encryption.kms_key_id.clone(),
            customer_key: self.customer_key.clone(),
            part_size: usize::try_from(self.settings.part_size_mib * 1024 * 1024).unwrap_or(usize::MAX),
            require_encryption: self.settings.require_encryption,
        };
        let facts = self.run(&format!("storing {key}"), upload.store(bytes))?;
        Ok(StoredRunpack { detail: facts.detail(&self.settings.bucket, &key, &sha256) })
    }

    fn get(&self, scope: Scope, name: &str) -> Result<BTreeMap<String, Vec<u8>>, RunpackStoreError> {
        let key = bundle_key(&self.settings.prefix, scope, name)?;
        let (_, verified) = self.fetch(scope, key)?;
        let mut files = verified.files;
        files.insert(verified.signed.descriptor.manifest_name.clone(), verified.manifest_bytes);
        Ok(files)
    }

    fn contains(&self, scope: Scope, name: &str) -> Result<bool, RunpackStoreError> {
        let key = bundle_key(&self.settings.prefix, scope, name)?;
        let (client, bucket, customer_key) =
            (self.client.clone(), self.settings.bucket.clone(), self.customer_key.clone());
        self.run(&format!("looking up {key}"), async move {
            Ok(Self::head(&client, &bucket, &key, customer_key.as_ref()).await?.is_some())
        })
    }

    fn bundle(&self, scope: Scope, name: &str, _keys: &KeyStore) -> Result<(Vec<u8>, String), RunpackStoreError> {
        let key = bundle_key(&self.settings.prefix, scope, name)?;
        let (bytes, verified) = self.fetch(scope, key)?;
        if verified.signed.descriptor.manifest_name != MANIFEST {
            return Err(RunpackStoreError::Bundle(format!(
                "the runpack's manifest is {}, downloads serve runpacks whose manifest is {MANIFEST}",
                verified.signed.descriptor.manifest_name
            )));
        }
        // The stored object itself, as written under retention: what was verified is what is served.
        Ok((bytes, verified.signed.descriptor.run_id))
    }
}
