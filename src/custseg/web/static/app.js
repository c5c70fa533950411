/* custseg pages: what every page shares.  Written for the app; no libraries. */
(function () {
  "use strict";

  /* A form with data-confirm-name keeps its [data-confirm-button] disabled until the
     "confirm" field repeats the name (the server checks it again where it matters). */
  function typedConfirmation(form) {
    var name = form.getAttribute("data-confirm-name");
    var field = form.querySelector("input[name=confirm]");
    var button = form.querySelector("[data-confirm-button]");
    if (!field || !button) {
      return;
    }
    function update() {
      button.disabled = field.value !== name;
    }
    field.addEventListener("input", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm-name]"), typedConfirmation);
  });
}());

/* The session's CSRF token, for requests to the API that change something. */
window.custsegCsrf = function () {
  "use strict";
  var meta = document.querySelector("meta[name=csrf-token]");
  return meta ? meta.getAttribute("content") : "";
};

/* The one-line message of an API error answer ({"error": {"message": …}}). */
window.custsegErrorMessage = function (text, status) {
  "use strict";
  try {
    var body = JSON.parse(text);
    if (body && body.error && body.error.message) {
      return body.error.message;
    }
  } catch (ignore) {
    /* not JSON: say what happened */
  }
  return "the server answered " + status + "; try again";
};
