# Textos de las páginas en español. Los títulos y mensajes de cada resultado están en outcomes.ftl.

connected-title = Conexión completada
connected-body = Su cuenta de { $connection } ya está conectada a { $app }. Puede cerrar esta ventana.
back-to-app = Volver a { $app }
back-to-app-generic = Volver a la aplicación
try-again = Reintentar
contact-support = Contactar con soporte
check-status = Ver estado del servicio
reference-label = Referencia:
actions-label = Qué puede hacer

result-gone-title = Esta página ya no está disponible
result-gone-body = Los resultados de las conexiones se conservan durante un día. Vuelva a la aplicación para comprobar si la conexión se ha completado.
result-other-browser-title = Esta página corresponde a otro navegador
result-other-browser-body = El resultado de una conexión solo se muestra en el navegador desde el que se hizo la conexión. Vuelva a la aplicación para comprobar si la conexión se ha completado.
result-verifying-title = Esperando confirmación
result-verifying-body = La aplicación está confirmando que esta conexión le pertenece. Actualice esta página dentro de unos instantes.
result-pending-title = La conexión sigue en curso
result-pending-body = La conexión todavía no ha terminado. Actualice esta página dentro de unos instantes.

not-found-title = Página no encontrada
not-found-body = No hay nada en esta dirección.
internal-title = Se ha producido un error por nuestra parte
internal-body = Vuelva a intentarlo dentro de unos minutos.
uri-too-long-title = Esta dirección es demasiado larga
headers-too-large-title = Esta solicitud contiene demasiados datos
payload-too-large-title = Esta solicitud es demasiado grande
refused-body = La solicitud se ha rechazado sin que se haya hecho nada. Vuelva a la aplicación e inténtelo de nuevo.
rate-limited-title = Demasiados intentos
rate-limited-body = Desde este navegador se ha intentado conectar demasiadas veces en poco tiempo. Espere un minuto y, después, vuelva a la aplicación e inténtelo de nuevo.

credential-title = Conectar { $connection }
credential-intro-key = Introduzca su clave de API de { $connection } para conectarlo con { $app }.
credential-intro-basic = Introduzca su usuario y contraseña de { $connection } para conectarlo con { $app }.
credential-key-label = Clave de API
credential-username-label = Usuario
credential-password-label = Contraseña
credential-submit = Conectar
credential-privacy = Lo que introduzca se comprueba con { $connection } y se guarda cifrado. No se vuelve a mostrar.
credential-missing = Rellene todos los campos.
credential-malformed = Eso no parece correcto: es demasiado largo o contiene caracteres que una clave no puede tener. Revíselo y vuelva a intentarlo.
form-unreadable-title = No se pudo leer este formulario

support-subject = Problema de conexión, referencia { $reference }
support-body = Hola:

    No se ha podido conectar { $connection } con { $app }.

    Referencia: { $reference }
    Conexión: { $connection }
    Hora (UTC): { $time }
