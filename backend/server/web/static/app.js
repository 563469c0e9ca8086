// Loft's web page: uploads (files and folders, drag and drop, a progress bar, pieces
// that resume after a dropped connection) and confirmations. No inline script: the
// Content-Security-Policy allows only this file.
"use strict";

(function () {
  const csrf = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  // Forms that ask before they act (delete).
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  const zone = document.getElementById("upload-zone");
  if (!zone) return;
  const folder = zone.dataset.folder === "/" ? "" : zone.dataset.folder;
  const status = document.getElementById("upload-status");
  const bar = document.getElementById("upload-progress");
  const text = document.getElementById("upload-text");
  const dropTarget = document.getElementById("main");

  async function call(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const err = new Error(answer.message || `HTTP ${response.status}`);
      err.status = response.status;
      err.detail = answer;
      throw err;
    }
    return answer;
  }

  // One piece, with progress events; resolves to the server's new offset.
  function sendPiece(id, offset, blob, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", `/upload/${id}?offset=${offset}`);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        let answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 200) resolve(answer.offset);
        else {
          const err = new Error(answer.message || `HTTP ${xhr.status}`);
          err.status = xhr.status;
          reject(err);
        }
      };
      xhr.onerror = () => reject(Object.assign(new Error("connection lost"), { status: 0 }));
      xhr.send(blob);
    });
  }

  const pause = (ms) => new Promise((r) => setTimeout(r, ms));

  async function uploadOne(file, path, progress) {
    const key = `loft-upload:${path}:${file.size}:${file.lastModified}`;
    let id = localStorage.getItem(key);
    let offset = 0;
    let piece = 16 * 1024 * 1024;
    if (id) {
      try { offset = (await call("GET", `/upload/${id}`)).offset; } catch (e) { id = null; }
    }
    if (!id) {
      const started = await call("POST", "/upload", { path, size: file.size });
      id = started.id;
      piece = started.piece;
      localStorage.setItem(key, id);
    }
    let failures = 0;
    while (offset < file.size) {
      const end = Math.min(offset + piece, file.size);
      try {
        offset = await sendPiece(id, offset, file.slice(offset, end), (n) => progress(offset + n));
        failures = 0;
      } catch (err) {
        // A dropped connection or a piece the server already has: ask where it is
        // (and if that fails too, the network is still away: wait and ask again).
        if ((err.status !== 0 && err.status !== 409 && err.status < 500) || ++failures > 12) throw err;
        text.textContent = `Connection lost; resuming ${file.name}…`;
        await pause(Math.min(500 * 2 ** failures, 5000));
        try { offset = (await call("GET", `/upload/${id}`)).offset; } catch (e) { /* offline */ }
      }
      progress(offset);
    }
    await call("POST", `/upload/${id}/finish`);
    localStorage.removeItem(key);
  }

  async function uploadAll(items) {
    if (!items.length) return;
    const total = items.reduce((n, item) => n + item.file.size, 0) || 1;
    let done = 0;
    status.hidden = false;
    bar.max = total;
    bar.value = 0;
    const failed = [];
    for (const [index, item] of items.entries()) {
      text.textContent = `Uploading ${item.path.split("/").pop()} (${index + 1} of ${items.length})`;
      try {
        await uploadOne(item.file, item.path, (n) => { bar.value = done + n; });
      } catch (err) {
        failed.push(`${item.path}: ${err.message}`);
      }
      done += item.file.size;
      bar.value = done;
    }
    if (failed.length) {
      text.textContent = `Not uploaded: ${failed.join("; ")}`;
      text.setAttribute("role", "alert");
    } else {
      text.textContent = `Uploaded ${items.length} file${items.length > 1 ? "s" : ""}.`;
      window.location.reload();
    }
  }

  const fromInput = (input) => Array.from(input.files).map((file) => ({
    file, path: `${folder}/${file.webkitRelativePath || file.name}`,
  }));

  ["upload-files", "upload-folder"].forEach((name) => {
    const input = document.getElementById(name);
    input.addEventListener("change", () => uploadAll(fromInput(input)));
  });

  // Drag and drop: files, and folders walked through their entries.
  function walk(entry, prefix, out) {
    return new Promise((resolve) => {
      if (entry.isFile) {
        entry.file((file) => { out.push({ file, path: `${prefix}/${entry.name}` }); resolve(); },
          () => resolve());
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        const all = [];
        const more = () => reader.readEntries(async (batch) => {
          if (!batch.length) {
            for (const child of all) await walk(child, `${prefix}/${entry.name}`, out);
            resolve();
          } else { all.push(...batch); more(); }
        }, () => resolve());
        more();
      } else resolve();
    });
  }

  dropTarget.addEventListener("dragover", (event) => {
    event.preventDefault();
    dropTarget.classList.add("dropping");
  });
  dropTarget.addEventListener("dragleave", () => dropTarget.classList.remove("dropping"));
  dropTarget.addEventListener("drop", async (event) => {
    event.preventDefault();
    dropTarget.classList.remove("dropping");
    const entries = Array.from(event.dataTransfer.items || [])
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
      .filter(Boolean);
    const items = [];
    if (entries.length) {
      for (const entry of entries) await walk(entry, folder, items);
    } else {
      for (const file of event.dataTransfer.files) items.push({ file, path: `${folder}/${file.name}` });
    }
    uploadAll(items);
  });
})();
