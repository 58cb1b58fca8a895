"""The operations of the conformance record, and how to drive them against a service.

One list (:data:`OPERATIONS`) says what is asked, in order; the same list is
sent to FirecREST v2 by ``record.py`` and to hpcgate's edge by the conformance
tests, so the two see the same requests on the same fixture tree. Requests are
templates: ``{system}``, ``{scratch}`` (the fixture directory), ``{run}`` (the
run's id) and ``{jobId}`` (the job the submit step created) are filled in when
sent, and the concrete values are put back to their placeholders in what is
stored, so that a record made again on another day or machine reads the same.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

# Each line numbered, so that head/tail/view answers show which part came back.
DATA = "".join(f"line {n}\n" for n in range(1, 21))
UPLOAD_NAME = "uploaded.txt"
UPLOAD = "uploaded by the conformance record\n"
# Long enough for the attach and the cancel to meet a running job.
JOB_SCRIPT = "#!/bin/bash\nsleep 120\n"
MISSING_JOB = "999999999"
STAGED_NAME = "staged.txt"
# The part size of S3 multipart uploads on both sides (hpcgate's default s3.max_part_size;
# FirecREST's multipart.max_part_size was set to it for the record): a file one byte
# over two parts needs three upload URLs. Declared only: no byte of it is sent.
PART_SIZE = 1024**3
MULTIPART_SIZE = 2 * PART_SIZE + 1


def setup_script(scratch: str) -> str:
    """The shell command that builds the fixture tree under ``scratch`` (as alice).

    data.txt (20 numbered lines), .hidden, sub/nested.txt, link -> data.txt,
    and secret.txt that alice cannot read (mode 000).
    """
    q = shlex.quote(scratch)
    data = shlex.quote(DATA)
    return "; ".join(
        [
            "set -e",
            f"mkdir -p -- {q}/sub",
            f"printf %s {data} > {q}/data.txt",
            f"printf 'hidden\\n' > {q}/.hidden",
            f"printf 'nested\\n' > {q}/sub/nested.txt",
            f"ln -s data.txt {q}/link",
            f"printf 'secret\\n' > {q}/secret.txt",
            f"chmod 000 -- {q}/secret.txt",
        ]
    )


def cleanup_script(paths: list[str]) -> str:
    """The shell command that removes the fixture tree and the logs the run left outside it."""
    return shlex.join(["rm", "-rf", "--", *paths])


@dataclass(frozen=True)
class Operation:
    """One request of the record; its strings may hold the placeholders above."""

    name: str
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    json: Any = None
    upload: tuple[str, str] | None = None  # (file name, content) as multipart field ``file``
    authorized: bool = True  # False: sent without a bearer token
    wait_running: bool = False  # wait until {jobId} runs before sending
    capture_job: bool = False  # the reply's jobId becomes {jobId}
    # The reply's transfer job waits for an upload the scenario never makes: it is
    # cancelled (unrecorded) at the end of the run instead of waited for.
    cancel_job: bool = False

    def request(self) -> dict[str, Any]:
        """The request as stored in the record (templates, not filled in)."""
        request: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.query:
            request["query"] = self.query
        if self.json is not None:
            request["json"] = self.json
        if self.upload is not None:
            request["upload"] = {"filename": self.upload[0], "content": self.upload[1]}
        if not self.authorized:
            request["authorized"] = False
        return request


FS = "/filesystem/{system}/ops"
TRANSFER = "/filesystem/{system}/transfer"
JOBS = "/compute/{system}/jobs"
S = "{scratch}"


def _op(name: str, method: str, path: str, **kwargs: Any) -> Operation:
    return Operation(name, method, path, **kwargs)


OPERATIONS: list[Operation] = [
    # status
    _op("status_systems", "GET", "/status/systems"),
    _op("status_nodes", "GET", "/status/{system}/nodes"),
    _op("status_partitions", "GET", "/status/{system}/partitions"),
    _op("status_reservations", "GET", "/status/{system}/reservations"),
    _op("status_userinfo", "GET", "/status/{system}/userinfo"),
    _op("status_liveness", "GET", "/status/liveness/", authorized=False),
    _op("status_no_token", "GET", "/status/systems", authorized=False),
    _op("status_unknown_system", "GET", "/status/nosuchsystem/nodes"),
    # compute
    _op(
        "job_submit",
        "POST",
        JOBS,
        json={"job": {"name": "conformance-{run}", "script": JOB_SCRIPT, "workingDirectory": S}},
        capture_job=True,
    ),
    _op("job_submit_no_job", "POST", JOBS, json={}),
    # By name, this run's job alone. Unfiltered, FirecREST fails (500) once the user has any
    # job whose name holds a "|" (its sacct output is "|"-separated), as other tests submit.
    # Waits for the job to run (and Slurm to account its batch step), so that the list, job,
    # metadata and attach see the same state each time.
    _op("jobs_list", "GET", JOBS, query={"name": "conformance-{run}"}, wait_running=True),
    _op("job_get", "GET", JOBS + "/{jobId}"),
    _op("job_metadata", "GET", JOBS + "/{jobId}/metadata"),
    _op("job_attach", "PUT", JOBS + "/{jobId}/attach", json={"command": "true"}),
    _op("job_cancel", "DELETE", JOBS + "/{jobId}"),
    _op("job_get_unknown", "GET", f"{JOBS}/{MISSING_JOB}"),
    # No metadata of an unknown job: FirecREST answers 500 "()" and drops the connection,
    # because its sacct call asks for a field (StdIn) that this Slurm does not have.
    _op("job_cancel_unknown", "DELETE", f"{JOBS}/{MISSING_JOB}"),
    _op("job_get_bad_id", "GET", JOBS + "/not-a-job"),
    # listing
    _op("ls", "GET", FS + "/ls", query={"path": S}),
    _op("ls_hidden", "GET", FS + "/ls", query={"path": S, "showHidden": "true"}),
    _op("ls_recursive", "GET", FS + "/ls", query={"path": S, "recursive": "true"}),
    _op("ls_dereference", "GET", FS + "/ls", query={"path": S, "dereference": "true"}),
    _op("ls_numeric_uid", "GET", FS + "/ls", query={"path": S, "numericUid": "true"}),
    _op("ls_file", "GET", FS + "/ls", query={"path": S + "/data.txt"}),
    _op("ls_missing", "GET", FS + "/ls", query={"path": S + "/missing"}),
    _op("ls_denied", "GET", FS + "/ls", query={"path": "/home/bob"}),
    _op("ls_outside", "GET", FS + "/ls", query={"path": "/etc/hostname"}),
    _op("ls_relative", "GET", FS + "/ls", query={"path": "relative/path"}),
    _op("ls_no_path", "GET", FS + "/ls"),
    # reading
    _op("head", "GET", FS + "/head", query={"path": S + "/data.txt"}),
    _op("head_lines", "GET", FS + "/head", query={"path": S + "/data.txt", "lines": "3"}),
    _op("head_bytes", "GET", FS + "/head", query={"path": S + "/data.txt", "bytes": "9"}),
    _op(
        "head_skip_trailing",
        "GET",
        FS + "/head",
        query={"path": S + "/data.txt", "lines": "17", "skipTrailing": "true"},
    ),
    _op(
        "head_lines_and_bytes",
        "GET",
        FS + "/head",
        query={"path": S + "/data.txt", "lines": "3", "bytes": "9"},
    ),
    _op("head_denied", "GET", FS + "/head", query={"path": S + "/secret.txt"}),
    _op("head_missing", "GET", FS + "/head", query={"path": S + "/missing"}),
    _op("head_bad_lines", "GET", FS + "/head", query={"path": S + "/data.txt", "lines": "x"}),
    _op("tail", "GET", FS + "/tail", query={"path": S + "/data.txt"}),
    _op("tail_lines", "GET", FS + "/tail", query={"path": S + "/data.txt", "lines": "3"}),
    _op("tail_bytes", "GET", FS + "/tail", query={"path": S + "/data.txt", "bytes": "9"}),
    _op(
        "tail_skip_heading",
        "GET",
        FS + "/tail",
        query={"path": S + "/data.txt", "lines": "17", "skipHeading": "true"},
    ),
    _op("tail_missing", "GET", FS + "/tail", query={"path": S + "/missing"}),
    _op("view", "GET", FS + "/view", query={"path": S + "/data.txt"}),
    _op(
        "view_offset",
        "GET",
        FS + "/view",
        query={"path": S + "/data.txt", "size": "12", "offset": "7"},
    ),
    _op("view_zero_size", "GET", FS + "/view", query={"path": S + "/data.txt", "size": "0"}),
    _op(
        "view_negative_offset", "GET", FS + "/view", query={"path": S + "/data.txt", "offset": "-1"}
    ),
    _op("view_missing", "GET", FS + "/view", query={"path": S + "/missing"}),
    _op("checksum", "GET", FS + "/checksum", query={"path": S + "/data.txt"}),
    _op("checksum_missing", "GET", FS + "/checksum", query={"path": S + "/missing"}),
    _op("file", "GET", FS + "/file", query={"path": S + "/data.txt"}),
    _op("file_directory", "GET", FS + "/file", query={"path": S + "/sub"}),
    _op("file_link", "GET", FS + "/file", query={"path": S + "/link"}),
    _op("file_missing", "GET", FS + "/file", query={"path": S + "/missing"}),
    _op("stat", "GET", FS + "/stat", query={"path": S + "/data.txt"}),
    _op("stat_link", "GET", FS + "/stat", query={"path": S + "/link"}),
    _op(
        "stat_dereference", "GET", FS + "/stat", query={"path": S + "/link", "dereference": "true"}
    ),
    _op("stat_missing", "GET", FS + "/stat", query={"path": S + "/missing"}),
    _op("download", "GET", FS + "/download", query={"path": S + "/data.txt"}),
    _op("download_missing", "GET", FS + "/download", query={"path": S + "/missing"}),
    _op("download_denied", "GET", FS + "/download", query={"path": S + "/secret.txt"}),
    # changing
    _op("mkdir", "POST", FS + "/mkdir", json={"sourcePath": S + "/newdir"}),
    _op("mkdir_parents", "POST", FS + "/mkdir", json={"sourcePath": S + "/a/b/c", "parent": True}),
    _op("mkdir_exists", "POST", FS + "/mkdir", json={"sourcePath": S + "/newdir"}),
    _op("mkdir_no_parent", "POST", FS + "/mkdir", json={"sourcePath": S + "/x/y"}),
    _op("mkdir_no_body", "POST", FS + "/mkdir", json={}),
    _op(
        "symlink",
        "POST",
        FS + "/symlink",
        json={"sourcePath": S + "/data.txt", "linkPath": S + "/link2"},
    ),
    _op(
        "symlink_exists",
        "POST",
        FS + "/symlink",
        json={"sourcePath": S + "/data.txt", "linkPath": S + "/link2"},
    ),
    _op("chmod", "PUT", FS + "/chmod", json={"sourcePath": S + "/data.txt", "mode": "640"}),
    _op(
        "chmod_bad_mode", "PUT", FS + "/chmod", json={"sourcePath": S + "/data.txt", "mode": "abc"}
    ),
    _op("chmod_missing", "PUT", FS + "/chmod", json={"sourcePath": S + "/missing", "mode": "640"}),
    _op(
        "chown",
        "PUT",
        FS + "/chown",
        json={"sourcePath": S + "/data.txt", "owner": "alice", "group": "hpcproj"},
    ),
    _op(
        "chown_denied",
        "PUT",
        FS + "/chown",
        json={"sourcePath": S + "/data.txt", "owner": "bob", "group": "bob"},
    ),
    _op("upload", "POST", FS + "/upload", query={"path": S}, upload=(UPLOAD_NAME, UPLOAD)),
    _op("upload_read_back", "GET", FS + "/head", query={"path": S + "/" + UPLOAD_NAME}),
    _op(
        "upload_missing_dir",
        "POST",
        FS + "/upload",
        query={"path": S + "/missing"},
        upload=(UPLOAD_NAME, UPLOAD),
    ),
    _op(
        "compress",
        "POST",
        FS + "/compress",
        json={"sourcePath": S + "/sub", "targetPath": S + "/sub.tar.gz"},
    ),
    _op(
        "extract",
        "POST",
        FS + "/extract",
        json={"sourcePath": S + "/sub.tar.gz", "targetPath": S + "/newdir"},
    ),
    _op("extract_read_back", "GET", FS + "/ls", query={"path": S + "/newdir", "recursive": "true"}),
    _op(
        "extract_missing",
        "POST",
        FS + "/extract",
        json={"sourcePath": S + "/missing.tar.gz", "targetPath": S + "/newdir"},
    ),
    _op("rm", "DELETE", FS + "/rm", query={"path": S + "/a"}),
    _op("rm_missing", "DELETE", FS + "/rm", query={"path": S + "/missing"}),
    # transfer jobs (cp/mv/rm/compress/extract, and upload/download staged in S3, run as Slurm jobs)
    _op(
        "transfer_cp",
        "POST",
        TRANSFER + "/cp",
        json={"sourcePath": S + "/data.txt", "targetPath": S + "/copy.txt"},
    ),
    _op(
        "transfer_mv",
        "POST",
        TRANSFER + "/mv",
        json={"sourcePath": S + "/link2", "targetPath": S + "/moved"},
    ),
    _op("transfer_rm", "DELETE", TRANSFER + "/rm", query={"path": S + "/sub"}),
    _op(
        "transfer_compress",
        "POST",
        TRANSFER + "/compress",
        json={"sourcePath": S + "/newdir", "targetPath": S + "/t.tar.gz"},
    ),
    _op(
        "transfer_extract",
        "POST",
        TRANSFER + "/extract",
        json={"sourcePath": S + "/sub.tar.gz", "targetPath": S + "/newdir"},
    ),
    _op(
        "transfer_upload",
        "POST",
        TRANSFER + "/upload",
        json={
            "sourcePath": S + "/" + STAGED_NAME,
            "transferDirectives": {"transferMethod": "s3", "fileSize": len(UPLOAD)},
        },
        cancel_job=True,
    ),
    _op(
        "transfer_upload_multipart",
        "POST",
        TRANSFER + "/upload",
        json={
            "sourcePath": S + "/" + STAGED_NAME,
            "transferDirectives": {"transferMethod": "s3", "fileSize": MULTIPART_SIZE},
        },
        cancel_job=True,
    ),
    _op(
        "transfer_upload_no_directives",
        "POST",
        TRANSFER + "/upload",
        json={"sourcePath": S + "/" + STAGED_NAME},
    ),
    _op(
        "transfer_download",
        "POST",
        TRANSFER + "/download",
        json={"sourcePath": S + "/data.txt", "transferDirectives": {"transferMethod": "s3"}},
    ),
    _op(
        "transfer_download_missing",
        "POST",
        TRANSFER + "/download",
        json={"sourcePath": S + "/missing", "transferDirectives": {"transferMethod": "s3"}},
    ),
]
