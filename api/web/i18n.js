// The page's two languages, the app's own: English and Spanish. Strings are set with textContent.

const STRINGS = {
  en: {
    title: "BraNet: breast image analysis",
    skip: "Skip to the upload",
    language: "Language",
    signedInAs: "Signed in as {email}",
    localMode: "Local single-user mode",
    signIn: "Sign in",
    signOut: "Sign out",
    email: "Email",
    password: "Password",
    signInHelp: "Sign in with your BraNet account.",
    signInFailed: "Sign-in failed: {message}",
    bundleMissing: "This service uses Firebase sign-in, but the sign-in bundle is not built: run scripts/build-web on the server.",
    uploadHeading: "New analysis",
    dropHint: "Drop a PNG, JPEG or DICOM image here, or choose a file",
    chooseFile: "Choose image",
    noFile: "No image chosen",
    modality: "Modality",
    ultrasound: "Ultrasound",
    mammography: "Mammography",
    extractRoi: "Find lesion regions (ROI)",
    options: "Analysis options",
    optionsHelp: "Each value is checked by the service; the ranges come from its API description.",
    resetOptions: "Reset to defaults",
    defaultValue: "default {value}",
    analyse: "Analyse",
    uploading: "Uploading… {percent}%",
    analysing: "Analysing… {seconds} s",
    analysisFailed: "The analysis failed: {message}",
    resultHeading: "Result",
    caution: "Decision support only, not a diagnosis. The model can be wrong: read the image yourself and follow your clinical protocol.",
    label: "Model's label",
    probabilities: "Calibrated probabilities",
    risk: "BI-RADS-like category",
    riskLikelihood: "likelihood of malignancy {range}",
    lowConfidence: "Low confidence",
    roiMalignant: "The image is labelled malignant because at least one of its ROIs ({rois}) is.",
    threshold: "Malignant at p ≥ {threshold} ({operatingPoint}).",
    model: "Model {name} {version}, {ms} ms",
    report: "Printable report",
    reportMissing: "The report is not available for this analysis yet.",
    viewer: "Image and saliency",
    viewerHelp: "Saliency shows where the classifier looked. With a tool selected, click or drag on the image; from the keyboard, use the arrow keys to move the cursor and Enter or Space to place it.",
    opacity: "Saliency opacity",
    showContours: "Show ROI contours",
    noSaliency: "No saliency map for this analysis.",
    rois: "Regions of interest",
    noRois: "No ROI was requested.",
    noRoisFound: "No lesion region was found.",
    roiItem: "ROI {n}: {label}, p(malignant) {p}, area {area} px",
    roiThreshold: " (malignant at p ≥ {threshold}, the threshold of ROIs)",
    roiAreaMm: ", {mm} mm²",
    roiCorrection: "correction",
    tools: "Tool",
    toolNone: "Look only",
    toolPositive: "Lesion point (+)",
    toolNegative: "Not-lesion point (−)",
    toolBox: "Box around lesion",
    toolMissed: "Paint missed lesion",
    toolIgnore: "Paint region to ignore",
    toolErase: "Erase paint",
    brush: "Brush size",
    prompt: "ROI prompt: {points} point(s), {box}",
    promptBox: "a box",
    promptNoBox: "no box",
    clearPrompt: "Clear prompt",
    correctRoi: "Correct ROI",
    correcting: "Segmenting…",
    roiAdded: "A corrected ROI was added: {label}.",
    roiNone: "The prompt points at no lesion; nothing was stored.",
    roiUnavailable: "ROI correction is not available for this modality.",
    roiFailed: "The ROI correction failed: {message}",
    clearPaint: "Clear paint",
    feedbackHeading: "Your verdict",
    correctLabel: "Correct label",
    comment: "Comment (optional)",
    sendFeedback: "Send feedback",
    feedbackSent: "Feedback version {version} stored.",
    feedbackFailed: "The feedback was not stored: {message}",
    feedbackCount: "{n} feedback entries stored for this analysis.",
    normal: "Normal",
    benign: "Benign",
    malignant: "Malignant",
    historyHeading: "History",
    historyEmpty: "No analyses yet.",
    open: "Open",
    delete: "Delete",
    confirmDelete: "Delete this analysis from the history?",
    deleted: "The analysis was deleted.",
    more: "Show more",
    historyFailed: "The history could not be loaded: {message}",
    legendMissed: "missed lesion",
    legendIgnore: "ignore",
    serviceNotReady: "The service is not ready: {message}",
  },
  es: {
    title: "BraNet: análisis de imágenes mamarias",
    skip: "Ir a la carga de imágenes",
    language: "Idioma",
    signedInAs: "Sesión iniciada como {email}",
    localMode: "Modo local de un solo usuario",
    signIn: "Iniciar sesión",
    signOut: "Cerrar sesión",
    email: "Correo electrónico",
    password: "Contraseña",
    signInHelp: "Inicie sesión con su cuenta de BraNet.",
    signInFailed: "No se pudo iniciar sesión: {message}",
    bundleMissing: "Este servicio usa inicio de sesión con Firebase, pero el paquete de inicio de sesión no está generado: ejecute scripts/build-web en el servidor.",
    uploadHeading: "Nuevo análisis",
    dropHint: "Suelte aquí una imagen PNG, JPEG o DICOM, o elija un archivo",
    chooseFile: "Elegir imagen",
    noFile: "Ninguna imagen elegida",
    modality: "Modalidad",
    ultrasound: "Ecografía",
    mammography: "Mamografía",
    extractRoi: "Buscar regiones de lesión (ROI)",
    options: "Opciones del análisis",
    optionsHelp: "El servicio valida cada valor; los rangos vienen de la descripción de su API.",
    resetOptions: "Restablecer valores",
    defaultValue: "predeterminado {value}",
    analyse: "Analizar",
    uploading: "Subiendo… {percent}%",
    analysing: "Analizando… {seconds} s",
    analysisFailed: "El análisis falló: {message}",
    resultHeading: "Resultado",
    caution: "Solo apoyo a la decisión, no es un diagnóstico. El modelo puede equivocarse: lea usted la imagen y siga su protocolo clínico.",
    label: "Etiqueta del modelo",
    probabilities: "Probabilidades calibradas",
    risk: "Categoría tipo BI-RADS",
    riskLikelihood: "probabilidad de malignidad {range}",
    lowConfidence: "Confianza baja",
    roiMalignant: "La imagen se etiqueta como maligna porque al menos una de sus ROI ({rois}) lo es.",
    threshold: "Maligno con p ≥ {threshold} ({operatingPoint}).",
    model: "Modelo {name} {version}, {ms} ms",
    report: "Informe imprimible",
    reportMissing: "El informe de este análisis aún no está disponible.",
    viewer: "Imagen y mapa de relevancia",
    viewerHelp: "El mapa de relevancia muestra dónde miró el clasificador. Con una herramienta elegida, haga clic o arrastre sobre la imagen; con el teclado, mueva el cursor con las flechas y márquelo con Intro o Espacio.",
    opacity: "Opacidad del mapa",
    showContours: "Mostrar contornos de ROI",
    noSaliency: "Este análisis no tiene mapa de relevancia.",
    rois: "Regiones de interés",
    noRois: "No se pidieron ROI.",
    noRoisFound: "No se encontró ninguna región de lesión.",
    roiItem: "ROI {n}: {label}, p(maligno) {p}, área {area} px",
    roiThreshold: " (maligna con p ≥ {threshold}, el umbral de las ROI)",
    roiAreaMm: ", {mm} mm²",
    roiCorrection: "corrección",
    tools: "Herramienta",
    toolNone: "Solo mirar",
    toolPositive: "Punto de lesión (+)",
    toolNegative: "Punto sin lesión (−)",
    toolBox: "Recuadro de la lesión",
    toolMissed: "Pintar lesión omitida",
    toolIgnore: "Pintar región a ignorar",
    toolErase: "Borrar pintura",
    brush: "Tamaño del pincel",
    prompt: "Indicación de ROI: {points} punto(s), {box}",
    promptBox: "un recuadro",
    promptNoBox: "sin recuadro",
    clearPrompt: "Borrar indicación",
    correctRoi: "Corregir ROI",
    correcting: "Segmentando…",
    roiAdded: "Se añadió una ROI corregida: {label}.",
    roiNone: "La indicación no señala ninguna lesión; no se guardó nada.",
    roiUnavailable: "La corrección de ROI no está disponible para esta modalidad.",
    roiFailed: "La corrección de ROI falló: {message}",
    clearPaint: "Borrar pintura",
    feedbackHeading: "Su valoración",
    correctLabel: "Etiqueta correcta",
    comment: "Comentario (opcional)",
    sendFeedback: "Enviar valoración",
    feedbackSent: "Valoración versión {version} guardada.",
    feedbackFailed: "La valoración no se guardó: {message}",
    feedbackCount: "{n} valoraciones guardadas para este análisis.",
    normal: "Normal",
    benign: "Benigno",
    malignant: "Maligno",
    historyHeading: "Historial",
    historyEmpty: "Aún no hay análisis.",
    open: "Abrir",
    delete: "Eliminar",
    confirmDelete: "¿Eliminar este análisis del historial?",
    deleted: "Se eliminó el análisis.",
    more: "Mostrar más",
    historyFailed: "No se pudo cargar el historial: {message}",
    legendMissed: "lesión omitida",
    legendIgnore: "ignorar",
    serviceNotReady: "El servicio no está listo: {message}",
  },
};

// Option labels and help; an option the page does not know is shown by its API name and description.
const OPTION_TEXT = {
  en: {
    saliency: ["Saliency method", "Where the classifier looked: Grad-CAM, or integrated gradients (finer, better at locating the lesion)"],
    saliency_layer: ["Grad-CAM layer", "multiscale: layer4 sharpened by layers 3, 2 and 1; layer3 is finer, layer4 coarser"],
    saliency_steps: ["Integrated-gradients steps", "More steps: smoother map, slower"],
    roi_min_area: ["Smallest ROI (fraction of image)", "Regions smaller than this are dropped"],
    roi_confidence: ["ROI confidence", "Smallest mean lesion probability inside a region"],
    roi_max: ["Most ROIs", "The most confident regions first"],
    operating_point: ["Operating point", "Screening: sensitivity ≥ 0.95 for malignancy; balanced: best sensitivity + specificity"],
    dicom_frame: ["DICOM frame", "Frame of a multi-frame DICOM file, from 0; ignored for PNG and JPEG"],
    screen_crop: ["Crop scanner screenshot", "Ultrasound: analyse only the scan area of a scanner screenshot, with calipers and burned-in text removed"],
  },
  es: {
    saliency: ["Método de relevancia", "Dónde miró el clasificador: Grad-CAM, o gradientes integrados (más fino, localiza mejor la lesión)"],
    saliency_layer: ["Capa de Grad-CAM", "multiscale: layer4 afinada por las capas 3, 2 y 1; layer3 es más fina, layer4 más gruesa"],
    saliency_steps: ["Pasos de gradientes integrados", "Más pasos: mapa más suave, más lento"],
    roi_min_area: ["ROI mínima (fracción de la imagen)", "Se descartan las regiones más pequeñas"],
    roi_confidence: ["Confianza de ROI", "Probabilidad media mínima de lesión dentro de una región"],
    roi_max: ["Máximo de ROI", "Primero las regiones más seguras"],
    operating_point: ["Punto de operación", "Cribado: sensibilidad ≥ 0,95 para malignidad; equilibrado: máxima sensibilidad + especificidad"],
    dicom_frame: ["Fotograma DICOM", "Fotograma de un archivo DICOM de varios fotogramas, desde 0; se ignora en PNG y JPEG"],
    screen_crop: ["Recortar captura del ecógrafo", "Ecografía: analizar solo el área de exploración de una captura de pantalla, sin calibradores ni texto sobreimpreso"],
  },
};

const VALUE_TEXT = {
  en: { gradcam: "Grad-CAM", multiscale: "Multiscale", integrated_gradients: "Integrated gradients", none: "None", screening: "Screening", balanced: "Balanced" },
  es: { gradcam: "Grad-CAM", multiscale: "Multiescala", integrated_gradients: "Gradientes integrados", none: "Ninguno", screening: "Cribado", balanced: "Equilibrado" },
};

// The service's own fixed sentences (it answers in English), by their English text: a sentence the
// service changes is shown as it comes rather than mistranslated.
const SERVICE_TEXT = {
  es: {
    "Model-derived category for decision support, not a BI-RADS assessment: it must be confirmed by a radiologist reading the whole examination.":
      "Categoría derivada del modelo como apoyo a la decisión, no una evaluación BI-RADS: debe confirmarla un radiólogo que lea el estudio completo.",
  },
};

export const LANGUAGES = ["en", "es"];
let current = "en";

export function initialLanguage() {
  const saved = localStorage.getItem("branet.lang");
  if (LANGUAGES.includes(saved)) return saved;
  const browser = (navigator.language || "en").slice(0, 2).toLowerCase();
  return LANGUAGES.includes(browser) ? browser : "en";
}

export function setLanguage(lang) {
  current = LANGUAGES.includes(lang) ? lang : "en";
  localStorage.setItem("branet.lang", current);
  document.documentElement.lang = current;
  document.title = t("title");
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const element of document.querySelectorAll("[data-i18n-aria]")) {
    element.setAttribute("aria-label", t(element.dataset.i18nAria));
  }
}

export function language() {
  return current;
}

export function t(key, values = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export function serviceText(text) {
  return SERVICE_TEXT[current]?.[text] ?? text;
}

export function optionText(name, fallbackDescription) {
  const entry = OPTION_TEXT[current][name];
  return entry ? { label: entry[0], help: entry[1] } : { label: name, help: fallbackDescription || "" };
}

export function valueText(value) {
  return VALUE_TEXT[current][value] ?? value;
}

export function formatNumber(value, digits = 2) {
  return new Intl.NumberFormat(current, { maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(value);
}

export function formatDate(iso) {
  return new Intl.DateTimeFormat(current, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
}
