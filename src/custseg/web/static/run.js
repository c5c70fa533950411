/* A run's page while the run is queued or running: its state comes from the API's
   server-sent events (…/runs/{id}/events), or by polling …/runs/{id} when the events
   cannot be had; once the run is final the page reloads to show the outcome. */
(function () {
  "use strict";

  var FINAL = ["done", "failed", "interrupted", "cancelled"];

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("progress");
    if (!box) {
      return;
    }
    var bar = document.getElementById("run-progress");
    var percent = document.getElementById("run-percent");
    var step = document.getElementById("run-step");
    var badge = document.getElementById("run-status");
    var finished = false;

    function show(state) {
      if (finished || !state) {
        return;
      }
      var value = Math.round((state.progress || 0) * 1000) / 10;
      bar.value = value;
      percent.textContent = Math.round(value) + " %";
      step.textContent = state.step || (state.status === "queued" ? "waiting for a worker" : "");
      badge.textContent = state.status;
      badge.className = "status status-" + state.status;
      if (FINAL.indexOf(state.status) >= 0) {
        finished = true;
        window.location.reload();
      }
    }

    function poll() {
      if (finished) {
        return;
      }
      fetch(box.getAttribute("data-state"), {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (answer) {
          if (!answer.ok) {
            throw new Error(String(answer.status));
          }
          return answer.json();
        })
        .then(function (state) {
          show(state);
          window.setTimeout(poll, 1000);
        })
        .catch(function () {
          window.setTimeout(poll, 3000);
        });
    }

    if (!window.EventSource) {
      poll();
      return;
    }
    var events = new EventSource(box.getAttribute("data-events"));
    events.addEventListener("status", function (event) {
      show(JSON.parse(event.data));
    });
    events.addEventListener("error", function () {
      events.close();
      poll();
    });
  });
}());
