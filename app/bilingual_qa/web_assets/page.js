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
  // the file picker still offers text documents first. Gradio renders the button's file
  // input beside it and may re-render it, hence the observer.
  const wanted = ".txt,.md,.markdown,.text,text/plain,text/markdown";
  const accept = () => {
    const button = document.getElementById("bqa-upload");
    const input = button && button.parentElement.querySelector("input[type=file]");
    if (input && input.accept !== wanted) input.accept = wanted;
  };
  accept();
  new MutationObserver(accept).observe(document.body, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["accept"],
  });
}
