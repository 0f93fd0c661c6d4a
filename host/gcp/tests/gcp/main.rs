//! cbench-gcp against a strict local fake of Google's token endpoint, metadata server, Cloud
//! Storage and Cloud Batch (one test binary; a file per service).

mod batch;
mod storage;

use cbench_gcp_fake as fake;
