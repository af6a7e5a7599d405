() => {
  // [P#] markers in answers are links to "#src-<turn>-<P#>". Follow them inside the page:
  // scroll the sources panel to the card and flash it, instead of navigating (or opening
  // a new tab, as chat links otherwise would). When the panel shows another answer, the
  // click also selects the message; the server swaps the panel and calls bqaReveal again.
  const reveal = () => {
    const id = window.bqaTarget;
    const card = id && document.getElementById(id);
    if (!card) return;
    window.bqaTarget = null;
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
    card.classList.remove("bqa-flash");
    void card.offsetWidth; // restart the animation
    card.classList.add("bqa-flash");
  };
  window.bqaReveal = reveal;
  document.addEventListener(
    "click",
    (event) => {
      const link = event.target instanceof Element && event.target.closest('a[href^="#src-"]');
      if (!link) return;
      event.preventDefault();
      window.bqaTarget = link.getAttribute("href").slice(1);
      reveal();
    },
    true,
  );
  // The upload button accepts any file so that a wrong one gets a clear message in the chat;
  // the file picker still offers the documents it reads first. Gradio renders the button's file
  // input beside it and may re-render it, hence the observer.
  const wanted =
    ".txt,.md,.markdown,.text,.pdf,.docx,.html,.htm,.xhtml,.odt,.epub,text/plain,text/markdown,application/pdf," +
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document,text/html," +
    "application/vnd.oasis.opendocument.text,application/epub+zip";
  const accept = () => {
    const button = document.getElementById("bqa-upload");
    const input = button && button.parentElement.querySelector("input[type=file]");
    if (input && input.accept !== wanted) input.accept = wanted;
  };
  // Where a keyboard is at hand (a wide screen), the question box gets the focus, without
  // scrolling the page to it: Gradio's autofocus would scroll a phone's page past its header
  // (and open the phone's keyboard).
  let focused = !window.matchMedia("(min-width: 721px)").matches;
  const focus = () => {
    if (focused) return;
    const box = document.querySelector("#bqa-question textarea");
    if (!box) return;
    focused = true;
    if (document.activeElement === document.body || !document.activeElement) box.focus({ preventScroll: true });
  };
  // A longer placeholder (the empty-question hint) must show whole: Gradio sizes the box to
  // its text when it is typed in, not when its placeholder changes, so grow it here (an empty
  // textarea's scrollHeight is its placeholder's); typing sizes it again.
  const fit = () => {
    const box = document.querySelector("#bqa-question textarea");
    if (!box || box.value) return;
    const height = box.getBoundingClientRect().height;
    if (box.scrollHeight > box.clientHeight) box.style.height = `${height + box.scrollHeight - box.clientHeight}px`;
  };
  const changed = () => {
    accept();
    focus();
    fit();
  };
  changed();
  new MutationObserver(changed).observe(document.body, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["accept", "placeholder"],
  });
  window.addEventListener("resize", fit);
  // Gradio refuses a file over its size limit in the browser, in a passing pop-up, before the
  // server hears of it. Stop such a file here instead and send only its name and size, which
  // the server answers like any other refused file: an error message in the chat.
  document.addEventListener(
    "change",
    (event) => {
      const input = event.target;
      const button = document.getElementById("bqa-upload");
      if (!(input instanceof HTMLInputElement) || input.type !== "file") return;
      if (!button || !button.parentElement.contains(input)) return;
      const limit = (window.gradio_config || {}).max_file_size;
      const file = input.files && input.files[0];
      const refuse = document.getElementById("bqa-refused");
      if (!limit || !file || file.size <= limit || !refuse) return;
      event.stopImmediatePropagation();
      input.value = "";
      window.bqaRefused = JSON.stringify({ name: file.name, size: file.size });
      refuse.click(); // its event reads window.bqaRefused
    },
    true,
  );
}
