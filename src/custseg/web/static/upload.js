/* The upload page: a file from the picker or dropped on the zone is sent to the API with
   XMLHttpRequest, whose upload progress events drive the progress bar; when the dataset
   is made, its page opens.  Without script the form posts to the page route instead. */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload-form");
    if (!form) {
      return;
    }
    var input = document.getElementById("file");
    var zone = document.getElementById("dropzone");
    var chosen = document.getElementById("chosen");
    var status = document.getElementById("upload-status");
    var bar = document.getElementById("upload-progress");
    var percent = document.getElementById("upload-percent");
    var phase = document.getElementById("upload-phase");
    var message = document.getElementById("upload-error");
    var button = document.getElementById("upload-button");
    var dropped = null;

    function showError(text) {
      message.textContent = text;
      message.hidden = !text;
    }

    function showChosen(file) {
      chosen.textContent = file ? file.name + " (" + file.size.toLocaleString() + " bytes)" : "";
    }

    function setProgress(value) {
      bar.value = value;
      percent.textContent = value + " %";
    }

    input.addEventListener("change", function () {
      dropped = null;
      showError("");
      showChosen(input.files[0]);
    });

    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      zone.addEventListener(type, function () {
        zone.classList.remove("over");
      });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("over");
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || !files.length) {
        return;
      }
      if (files.length > 1) {
        showError("drop one file at a time");
        return;
      }
      dropped = files[0];
      try {
        input.files = files;
      } catch (ignore) {
        /* an older browser: the dropped file is sent apart */
      }
      showError("");
      showChosen(dropped);
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = dropped || input.files[0];
      if (!file) {
        showError("choose a file, or drop one on the box");
        return;
      }
      var limit = Number(form.getAttribute("data-limit"));
      if (limit && file.size > limit) {
        showError(file.name + ": the file is " + file.size.toLocaleString() + " bytes, over the upload limit of " +
                  limit.toLocaleString() + " bytes");
        return;
      }
      var body = new FormData(form);
      body.set("file", file, file.name);
      var request = new XMLHttpRequest();
      request.open("POST", form.getAttribute("data-api"));
      request.setRequestHeader("X-CSRF-Token", window.custsegCsrf());
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", function (progress) {
        if (progress.lengthComputable && progress.total > 0) {
          setProgress(Math.floor(progress.loaded * 100 / progress.total));
        }
      });
      request.upload.addEventListener("load", function () {
        setProgress(100);
        phase.textContent = "uploaded; reading the file…";
      });
      request.addEventListener("load", function () {
        if (request.status === 201) {
          var dataset = JSON.parse(request.responseText);
          phase.textContent = "done";
          window.location.assign(form.getAttribute("data-dataset-url") + dataset.id);
          return;
        }
        button.disabled = false;
        status.hidden = true;
        showError(window.custsegErrorMessage(request.responseText, request.status));
      });
      request.addEventListener("error", function () {
        button.disabled = false;
        status.hidden = true;
        showError("the upload was interrupted (the connection failed); send it again");
      });
      showError("");
      setProgress(0);
      phase.textContent = "uploading " + file.name;
      status.hidden = false;
      button.disabled = true;
      request.send(body);
    });
  });
}());
